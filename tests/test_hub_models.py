"""Models as the hub ships them: vrft-lite's resolution, prompts, SFT targets, think prefix,
image tokens, merge and reward on the real processor files (tests/real_hub.py: the hub's own
configs, templates and tokenizers, tiny random weights).

Qwen3-VL Thinking and Qwen3.5 files: no copy whose bytes match the hub's could be found, so
the Thinking convention is tested on THINKING, the real Qwen3-VL-2B-Instruct files with only
the generation prompt changed to open `<think>` (what the Thinking checkpoints' templates do,
with no enable_thinking switch); Qwen3.5's switch is tested on its tiny checkpoint
(visualrft_lite/modeling/tiny_families.py), not on hub files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from pathlib import Path

import pytest
from helpers import invoke
from PIL import Image
from real_hub import HUB, real_checkpoint  # noqa: F401 - the fixture

from visualrft_lite.config import load_config
from visualrft_lite.modeling import ops

pytestmark = pytest.mark.slow

QWEN2_VL, QWEN25_VL, QWEN3_VL = "Qwen2-VL-2B-Instruct", "Qwen2.5-VL-3B-Instruct", "Qwen3-VL-2B-Instruct"
ALL = (QWEN2_VL, QWEN25_VL, QWEN3_VL)
IMAGE_PAD, IM_END, THINK, END_THINK = 151655, 151645, 151667, 151668
# each checkpoint's preprocessor_config.json: Qwen2-VL / Qwen2.5-VL min_pixels / max_pixels,
# Qwen3-VL size.shortest_edge / longest_edge
OWN_PIXELS = {QWEN2_VL: (3136, 12845056), QWEN25_VL: (3136, 12845056), QWEN3_VL: (65536, 16777216)}
# the presets' budget per family: 4 and 512 tokens of 28x28, or 4 tokens of 32x32 and the same area
PRESET_PIXELS = {QWEN2_VL: (3136, 401408), QWEN25_VL: (3136, 401408), QWEN3_VL: (4096, 401408)}
GENERATION_PROMPT = "{{- '<|im_start|>assistant\\n' }}"  # the template's last line, as its source spells it


def _resolved(folder_or_dir, *overrides: str):
    from visualrft_lite.modeling.load import resolve_model

    return resolve_model(load_config(None, [f"model.name={folder_or_dir}", "model.device=cpu", *overrides]))


def _load(cfg):
    from visualrft_lite.modeling.load import load_base

    return load_base(cfg.model)


@pytest.fixture(scope="module")
def thinking(real_checkpoint, tmp_path_factory) -> Path:
    """Qwen3-VL-2B-Instruct with the generation prompt opening <think> (see the module docstring)."""
    out = tmp_path_factory.mktemp("thinking") / "Qwen3-VL-Thinking-style"
    shutil.copytree(real_checkpoint(QWEN3_VL), out)
    for name in ("chat_template.json", "tokenizer_config.json"):  # the processor's and the tokenizer's copy
        data = json.loads((out / name).read_text())
        head, tail = data["chat_template"].rsplit(GENERATION_PROMPT, 1)
        data["chat_template"] = head + "{{- '<|im_start|>assistant\\n<think>\\n' }}" + tail
        (out / name).write_text(json.dumps(data, indent=2))
    return out


# ----------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("folder", ALL)
def test_defaults_resolve_to_the_checkpoints_own_processor(real_checkpoint, folder, capsys):
    built = real_checkpoint(folder)
    capsys.readouterr()
    cfg = _resolved(built)
    assert (cfg.model.min_pixels, cfg.model.max_pixels) == OWN_PIXELS[folder]
    assert (cfg.model.thinking, cfg.model.quant) == ("off", "4bit")  # no think block; NF4
    assert capsys.readouterr().err == ""  # nothing to warn about
    assert "min_pixels: " + str(OWN_PIXELS[folder][0]) in cfg.to_yaml()  # what config.yaml records


@pytest.mark.parametrize("folder", ALL)
def test_thinking_on_an_instruct_template_is_one_warning_and_no_library_note(real_checkpoint, folder, capsys,
                                                                              monkeypatch):
    from transformers import processing_utils

    notes: list[str] = []
    monkeypatch.setattr(processing_utils.logger, "warning", lambda msg, *a, **k: notes.append(str(msg)))
    built = real_checkpoint(folder)
    capsys.readouterr()
    cfg = _resolved(built, "model.thinking=on", "model.quant=none")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "has no think block" in warnings[0], warnings
    assert cfg.model.thinking == "off"  # what the prompt does, recorded
    loaded = _load(cfg)
    text = ops.chat_text(loaded.processor, "What is this?")
    assert text.endswith("<|im_start|>assistant\n")  # the prompt as the template writes it
    assert notes == []  # no "Kwargs passed to processor.__call__" note from transformers


def test_a_thinking_template_resolves_on_and_cannot_be_turned_off(thinking, capsys):
    capsys.readouterr()
    assert _resolved(thinking).model.thinking == "on"
    assert capsys.readouterr().err == ""
    cfg = _resolved(thinking, "model.thinking=off")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: model.thinking=off but the chat template of")
    assert "always opens <think>" in err[0] and "the prompt ends with <|im_start|>assistant\\n<think>\\n," in err[0]
    assert cfg.model.thinking == "on"


# ----------------------------------------------------------------------------- the think prefix


def test_a_thinking_template_prefix_sft_target_and_completion(thinking):
    from visualrft_lite.data.records import Record
    from visualrft_lite.decoder import encode_inputs
    from visualrft_lite.sft import sft_targets
    from types import SimpleNamespace

    loaded = _load(_resolved(thinking, "model.quant=none"))
    assert ops.template_prefix(loaded.processor) == "<think>\n"
    # the model writes after the template's <think>: the decoded completion is scored with it in front
    written = ops.tokenize(loaded.processor, "A round shape.</think> <answer>circle</answer>")
    import torch

    assert ops.detokenize(loaded.processor, [torch.tensor(written)]) == [
        "<think>\nA round shape.</think> <answer>circle</answer>"]
    # SFT target: test_real_processor's Qwen3-VL row without its leading <think> (151667), which
    # the prompt already holds: "I" " see" " it" "." "</think>" " <" "answer" ">" "circle" "</" "answer" ">"
    enc = encode_inputs(loaded.model, loaded.processor, [Image.new("RGB", (112, 112))], ["?"], loaded.device)
    session = SimpleNamespace(processor=loaded.processor, device=loaded.device,
                              cfg=SimpleNamespace(model=SimpleNamespace(coords="rel1000")))
    ids, mask = sft_targets(session, [Record("x.png", "classify", "circle", fields={"think": "I see it."})], enc)
    assert ids[0, : int(mask[0].sum())].tolist() == [40, 1490, 432, 13, END_THINK, 366, 9217, 29, 25857, 522, 9217,
                                                     29, IM_END]


def _reward(*args: str, completion: str) -> dict:
    line = json.dumps({"task": "classify", "completion": completion, "solution": "circle"})
    result = invoke("reward", "-", *args, input_text=line + "\n")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.splitlines()[0])


def _run_dir(tmp_path: Path, name: str, *overrides: str) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text(load_config("demo", list(overrides)).to_yaml())
    return run


def test_reward_reads_the_think_prefix_as_training_does(thinking, real_checkpoint, tmp_path):
    # what a model writes after a prompt that opened <think>: the reasoning, then the answer
    after_think = "A round shape.</think> <answer>circle</answer>"
    assert _reward("--model", str(thinking), completion=after_think)["format"] == 1.0  # the template's <think>
    run = _run_dir(tmp_path, "run", f"model.name={thinking}")
    assert _reward("--run", str(run), completion=after_think) == {"format": 1.0, "accuracy": 1.0, "total": 2.0}
    # the Instruct template opened nothing: the same text has no <think> and fails the format
    assert _reward("--model", str(real_checkpoint(QWEN3_VL)), completion=after_think)["format"] == 0.0
    assert _reward(completion=after_think)["format"] == 0.0


def test_reward_run_with_thinking_off_on_qwen35(tmp_path, vrft_home):
    # Qwen3.5's tiny checkpoint (its template's switch; no hub files): with thinking off the
    # prompt closes an empty think block, and the model writes only the answer
    from visualrft_lite.modeling.tiny_families import ensure_tiny_family

    tiny35 = ensure_tiny_family("qwen3_5", vrft_home / "models")
    run = _run_dir(tmp_path, "off", f"model.name={tiny35}", "model.thinking=off")
    assert _reward("--run", str(run), completion="<answer>circle</answer>")["format"] == 1.0
    run = _run_dir(tmp_path, "on", f"model.name={tiny35}")
    assert _reward("--run", str(run), completion="<answer>circle</answer>")["format"] == 0.0  # <think> left open


# ----------------------------------------------------------------------------- image tokens


@pytest.mark.parametrize("folder", ALL)
@pytest.mark.parametrize("limits", ["own", "preset"])
def test_image_tokens_match_what_the_processor_makes(real_checkpoint, folder, limits):
    from visualrft_lite.modeling.load import token_budget

    low, high = PRESET_PIXELS[folder] if limits == "preset" else ("auto", "auto")
    cfg = _resolved(real_checkpoint(folder), f"model.min_pixels={low}", f"model.max_pixels={high}", "model.quant=none")
    loaded, budget = _load(cfg), token_budget(cfg.model)
    for size in ((112, 112), (333, 480), (1000, 600)):
        enc = ops.encode_prompt(loaded.processor, Image.new("RGB", size), "?")
        assert int((enc.input_ids == IMAGE_PAD).sum()) == budget.tokens(*size), size


def test_predict_json_reports_image_tokens(real_checkpoint, tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (112, 112), "red").save(image)
    result = invoke("predict", image, "--task", "classify", "--model", real_checkpoint(QWEN3_VL), "--json",
                    "--max-new-tokens", "2", "--set", "model.quant=none", "--set", "model.device=cpu")
    assert result.exit_code == 0, result.output
    # Qwen3-VL's own floor 65536 upscales 112x112 to 256x256: 8x8 tokens of 32x32 pixels
    assert json.loads(result.stdout.splitlines()[0])["image_tokens"] == 64
    assert "image tokens per image: 64 over 1 image; bounds 65536-16777216 pixels" in result.stderr


def test_data_show_reports_image_tokens_or_why_not(shapes_root):
    # the demo's 112 px shapes at min = max = 50176 = 224^2: 8x8 tokens of 28x28 pixels
    result = invoke("data", "show", "--preset", "demo", "--split", "train")
    assert result.exit_code == 0, result.output
    assert "image tokens per image: 64 over 64 images; bounds 50176-50176 pixels" in result.stdout
    result = invoke("data", "show", "--preset", "demo", "--split", "train",
                    "--set", "model.name=Qwen/Qwen2-VL-2B-Instruct")
    assert result.exit_code == 0, result.output  # the data is still shown; the tokens need the model's files
    assert "image tokens per image: not known (model 'Qwen/Qwen2-VL-2B-Instruct' is not in the Hugging Face cache" \
        in result.stdout


def test_train_start_up_line_names_the_budget(shapes_root):
    from visualrft_lite.data.sources import load_records
    from visualrft_lite.modeling.load import resolve_model
    from visualrft_lite.train import startup_budget

    cfg = resolve_model(load_config("demo"))
    line = startup_budget(cfg, load_records(cfg.data, "train").records)
    assert line.startswith("; image tokens per image: 64 over 64 images; bounds 50176-50176 pixels, 64-64 image tokens")


# ----------------------------------------------------------------------------- Qwen3.5 quantisation


def test_qwen35_named_with_set_resolves_to_16_bit_with_a_note(vrft_home, capsys):
    from visualrft_lite.modeling.tiny_families import ensure_tiny_family

    cfg = _resolved(ensure_tiny_family("qwen3_5", vrft_home / "models"))
    assert cfg.model.quant == "none" and "quant: none" in cfg.to_yaml()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("note: model.quant: auto is none for Qwen3.5")


# ----------------------------------------------------------------------------- merge


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(real_checkpoint, tmp_path_factory):
    """`runs(folder)`: RUN/final of a pretend run on the real files with the presets' budget."""
    from test_export import make_adapter

    made = {}

    def get(folder: str) -> Path:
        if folder not in made:
            run = tmp_path_factory.mktemp(folder)
            low, high = PRESET_PIXELS[folder]
            cfg = _resolved(real_checkpoint(folder), f"model.min_pixels={low}", f"model.max_pixels={high}")
            (run / "config.yaml").write_text(cfg.to_yaml())
            made[folder] = make_adapter(real_checkpoint(folder), run / "final")
        return made[folder]

    return get


@pytest.mark.parametrize("folder", [QWEN2_VL, QWEN3_VL])
def test_merge_writes_the_base_processor_as_shipped(real_checkpoint, runs, folder, tmp_path):
    from transformers import AutoProcessor

    from visualrft_lite.export import export_merged

    out, lines = tmp_path / "merged", []
    export_merged(runs(folder), out, dtype="fp32", device="cpu", echo=lines.append)
    base = real_checkpoint(folder)
    vendored = sorted(p.name for p in (HUB / folder).iterdir()
                      if p.name not in ("config.json", "generation_config.json"))  # save_pretrained writes these
    for name in (*vendored, "vocab.json", "merges.txt", "tokenizer.json"):  # the hub's bytes (and the BPE)
        assert _sha(out / name) == _sha(base / name), name
    low, high = PRESET_PIXELS[folder]
    info = json.loads((out / "merge_info.json").read_text())
    assert (info["min_pixels"], info["max_pixels"]) == (low, high)  # what training saw
    assert (info["processor"], info["processor_pixels"]) == ("base", list(OWN_PIXELS[folder]))
    assert any(f"pass min_pixels={low}, max_pixels={high}" in line for line in lines), lines
    size = AutoProcessor.from_pretrained(out).image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == OWN_PIXELS[folder]
    for path in out.iterdir():  # readable like any save_pretrained output
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path.name


@pytest.mark.parametrize("folder", [QWEN2_VL, QWEN3_VL])
def test_merge_processor_run_bakes_the_runs_limits_in(real_checkpoint, runs, folder, tmp_path):
    from transformers import AutoProcessor

    result = invoke("merge", "--adapter", runs(folder), "--out", tmp_path / "merged", "--dtype", "fp32",
                    "--device", "cpu", "--processor", "run")
    assert result.exit_code == 0, result.output
    low, high = PRESET_PIXELS[folder]
    size = AutoProcessor.from_pretrained(tmp_path / "merged").image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (low, high)
    assert "the merged processor has the same (--processor run)" in result.stdout
    base = real_checkpoint(folder)
    for name in ("tokenizer_config.json", "chat_template.json", "vocab.json"):  # only the image bounds change
        assert _sha(tmp_path / "merged" / name) == _sha(base / name), name
