"""`vrft-lite merge` on the tiny model: the merged checkpoint computes what base + adapter
computed (checked both by merge's own probe and independently after a plain-transformers
reload), NF4 merging really uses the dequantised weights, and misuse is a one-line error.

The adapter is built with peft directly and its B matrices set to random values: a fresh
adapter (B = 0) changes nothing, and a merge test on it could not fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error, invoke
import torch

from visualrft_lite import export
from visualrft_lite.errors import UserError
from visualrft_lite.modeling import merge as merge_mod

TARGETS = r".*language_model.*\.(q_proj|v_proj|down_proj)"


def make_adapter(base_dir: Path, out: Path, seed: int = 1) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(base_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0.0, 0.5)  # a trained-looking update, so the merge has something to get wrong
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """runs/X/final of a pretend run whose config.yaml says which pixels the adapter saw."""
    from visualrft_lite.config import load_config

    run = tmp_path_factory.mktemp("run")
    cfg = load_config("demo", [f"model.name={tiny_model_dir}", "model.min_pixels=3136", "model.max_pixels=6272"])
    (run / "config.yaml").write_text(cfg.to_yaml())
    return make_adapter(tiny_model_dir, run / "final")


def base_plus_adapter_logits(base_dir: Path, adapter: Path, processor) -> torch.Tensor:
    """The reference, built without vrft-lite's loading code: peft on the plain base."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(base_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    return merge_mod.probe_logits(model, processor, torch.device("cpu"))


def test_merged_fp32_matches_base_plus_adapter_and_loads_with_plain_transformers(tiny_model_dir, adapter_dir, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "merged"
    lines: list[str] = []
    report = export.export_merged(adapter_dir, out, dtype="fp32", device="cpu", echo=lines.append)
    assert report.base == str(tiny_model_dir)  # read from adapter_config.json
    assert report.max_abs_diff < 1e-4
    assert report.adapter_effect > 1e-2  # the adapter matters, so a broken merge would show
    assert any("max |merged" in line for line in lines)
    for name in ("model.safetensors", "config.json", "generation_config.json", "merge_info.json"):
        assert (out / name).is_file(), name
    assert "quantization_config" not in json.loads((out / "config.json").read_text())

    model = AutoModelForImageTextToText.from_pretrained(str(out))  # no vrft-lite code involved
    processor = AutoProcessor.from_pretrained(str(out))
    assert processor.chat_template  # the chat template travels with the model
    # the base's processor files as it shipped them (the tiny model's 112x112 cap), not the run's 6272
    assert processor.image_processor.size["longest_edge"] == 12544
    assert not any("lora" in n for n, _ in model.named_parameters())
    merged = merge_mod.probe_logits(model, processor, torch.device("cpu"))
    reference = base_plus_adapter_logits(tiny_model_dir, adapter_dir, processor)
    assert (merged - reference).abs().max().item() < 1e-4


def test_a_wrong_merge_is_caught_and_nothing_is_written(adapter_dir, tmp_path, monkeypatch):
    from visualrft_lite.modeling import load as mload

    real = mload.fold_adapter

    def doubled(loaded):  # the classic bug: LoRA scaling applied twice
        for name, module in loaded.model.named_modules():
            if hasattr(module, "scaling") and isinstance(module.scaling, dict):
                module.scaling = {k: 2 * v for k, v in module.scaling.items()}
        real(loaded)

    monkeypatch.setattr(mload, "fold_adapter", doubled)
    out = tmp_path / "merged"
    with pytest.raises(UserError, match="differs from base"):
        export.export_merged(adapter_dir, out, dtype="fp32", device="cpu", echo=lambda _: None)
    assert not out.exists()


def test_from_quantized_merges_into_the_nf4_weights(tiny_model_dir, adapter_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    from safetensors.torch import load_file

    plain = export.export_merged(adapter_dir, tmp_path / "plain", dtype="fp32", device="cpu", echo=lambda _: None)
    nf4 = export.export_merged(adapter_dir, tmp_path / "nf4", dtype="fp32", device="cpu", from_quantized=True,
                       echo=lambda _: None)
    assert nf4.max_abs_diff < 1e-4  # merged == NF4 base + adapter, what training saw
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "nf4" / "model.safetensors")
    assert set(a) == set(b)
    q = next(k for k in a if k.endswith("layers.0.self_attn.q_proj.weight"))
    gap = (a[q] - b[q]).abs().max().item()
    assert 0 < gap < 0.5 * a[q].abs().max().item()  # NF4 rounding: present, and small
    assert "quantization_config" not in json.loads((tmp_path / "nf4" / "config.json").read_text())
    assert json.loads((tmp_path / "nf4" / "merge_info.json").read_text())["dequantized_layers"] > 0


def test_nf4_base_leaves_the_vision_tower_unquantised(tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from visualrft_lite.config import ModelConfig
    from visualrft_lite.modeling.load import load_base

    loaded = load_base(ModelConfig(name=str(tiny_model_dir), quant="4bit", device="cpu"))
    quantised = [n for n, m in loaded.model.named_modules() if type(m).__name__ == "Linear4bit"]
    # the vision tower and lm_head stay full precision (transformers 5 matches skip names from the start)
    assert quantised and not [n for n in quantised if "visual" in n or "lm_head" in n]


def test_bf16_merge_passes_its_looser_tolerance(adapter_dir, tmp_path):
    report = export.export_merged(adapter_dir, tmp_path / "m", dtype="bf16", device="cpu", echo=lambda _: None)
    assert report.max_abs_diff <= report.tolerance
    assert json.loads((tmp_path / "m" / "config.json").read_text())["dtype"] == "bfloat16"


# ----------------------------------------------------------------------------- the command


def earlier_merge(out: Path) -> Path:
    """What an earlier `vrft-lite merge` left (recognised by merge_info.json), with stand-in weights."""
    out.mkdir(parents=True)
    for name in ("merge_info.json", "config.json", "generation_config.json", "tokenizer.json"):
        (out / name).write_text("{}")
    (out / "model.safetensors").write_bytes(b"earlier weights")
    return out


def test_cli_refuses_non_empty_out_without_force_and_replaces_it_with_force(adapter_dir, tmp_path):
    out = earlier_merge(tmp_path / "merged")
    assert_one_line_error(invoke("merge", "--adapter", adapter_dir, "--out", out, "--dtype", "fp32"),
                          "not empty", "--force")
    result = invoke("merge", "--adapter", adapter_dir, "--out", out, "--dtype", "fp32", "--device", "cpu", "--force")
    assert result.exit_code == 0, result.output
    assert "max |merged" in result.output and "replacing the earlier merged model" in result.output
    assert (out / "model.safetensors").read_bytes() != b"earlier weights"  # really replaced
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".vrft-lite.json"]  # no staging left


@pytest.mark.slow
def test_every_file_a_merge_writes_is_one_force_may_replace(adapter_dir, tmp_path):
    # if save_pretrained starts writing a new file name, --force would refuse every earlier merge
    from visualrft_lite.rundir import MARKER, OWN_FILES, _matches

    out = tmp_path / "m"
    export.export_merged(adapter_dir, out, dtype="fp32", device="cpu", echo=lambda _: None)
    assert [p.name for p in out.iterdir() if p.name != MARKER and not _matches(p.name, OWN_FILES["merge"])] == []


@pytest.mark.parametrize("foreign", ["notes.txt", "src/main.py", "config.json"])
def test_force_never_deletes_a_directory_that_is_not_a_merge(adapter_dir, tmp_path, foreign):
    # notes and code are the user's; a lone config.json may be the user's own model
    out = tmp_path / "mine"
    (out / foreign).parent.mkdir(parents=True)
    (out / foreign).write_text("precious")
    assert_one_line_error(invoke("merge", "--adapter", adapter_dir, "--out", out, "--force"), "did not write")
    assert (out / foreign).read_text() == "precious"


def test_force_keeps_a_users_file_inside_an_earlier_merge(adapter_dir, tmp_path):
    out = earlier_merge(tmp_path / "m")
    (out / "notes.txt").write_text("precious")
    result = invoke("merge", "--adapter", adapter_dir, "--out", out, "--force")
    assert_one_line_error(result, "notes.txt", "never deletes")
    assert (out / "notes.txt").read_text() == "precious" and (out / "model.safetensors").is_file()


def test_out_naming_a_file_is_one_line(adapter_dir, tmp_path):
    target = tmp_path / "model.bin"
    target.write_text("x")
    assert_one_line_error(invoke("merge", "--adapter", adapter_dir, "--out", target, "--force"), "is a file")
    assert target.read_text() == "x"


def test_a_failed_merge_keeps_the_earlier_one(adapter_dir, tmp_path, monkeypatch):
    out = earlier_merge(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(result, where, dtype, info, **_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(merge_mod, "save_merged", disk_full)
    with pytest.raises(OSError):
        export.export_merged(adapter_dir, out, dtype="fp32", device="cpu", force=True, echo=lambda _: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier merge, whole


def test_out_may_not_be_the_adapter_itself(adapter_dir):
    assert_one_line_error(invoke("merge", "--adapter", adapter_dir, "--out", adapter_dir, "--force"), "would overwrite")


def test_adapter_dir_without_adapter_is_a_one_line_error(tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert_one_line_error(invoke("merge", "--adapter", empty, "--out", tmp_path / "o"), "adapter_config.json")


@pytest.fixture(scope="module")
def other_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a wider MLP: same architecture, shapes the adapter does not fit."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = AutoConfig.from_pretrained(str(tiny_model_dir))
    cfg.text_config.intermediate_size *= 2
    out = tmp_path_factory.mktemp("other") / "model"
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(cfg).save_pretrained(str(out))
    for f in Path(tiny_model_dir).iterdir():  # processor, tokenizer, chat template
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "config.json" and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    return out


def test_base_adapter_mismatch_is_a_one_line_error(adapter_dir, other_model_dir, tmp_path):
    result = invoke("merge", "--adapter", adapter_dir, "--out", tmp_path / "o", "--base", other_model_dir,
                    "--device", "cpu")
    assert_one_line_error(result, "does not fit base")
    assert not (tmp_path / "o").exists()
