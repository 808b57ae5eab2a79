"""Qwen2.5-VL, Qwen3-VL and Qwen3.5 as first-class models, on tiny random checkpoints of the
real classes (`modeling/tiny_families.py`).

Ops: for two prompts of different lengths and image sizes, left-padded into one batch, the
vision-once paths (prefill + cached decode with the cache shared by G rows, completion hidden
states from the shared vision output) give the logits of the model's own forward with
pixel_values, one prompt at a time; the vision tower runs once. Qwen3.5's hybrid cache (linear
attention) goes through the same test. Then every verb on each family: GRPO steps in fp32 and
4-bit, predict (greedy and sampled), eval and merge.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from helpers import cached_decode_logits
import torch
from PIL import Image

from visualrft_lite.modeling import ops
from visualrft_lite.modeling.families import FAMILIES, family_of, resolve_coords, UnsupportedModel

FAMILY_NAMES = ("qwen2_5_vl", "qwen3_vl", "qwen3_5")


@pytest.fixture(scope="session")
def family_dirs(vrft_home: Path) -> dict[str, Path]:
    from visualrft_lite.modeling.tiny_families import ensure_tiny_family

    return {f: ensure_tiny_family(f, vrft_home / "models") for f in (*FAMILY_NAMES, "qwen3_vl_moe", "qwen3_5_moe")}


@pytest.fixture(scope="module")
def loaded(family_dirs):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cache = {}

    def get(family: str):
        if family not in cache:
            model = AutoModelForImageTextToText.from_pretrained(family_dirs[family]).eval()
            processor = AutoProcessor.from_pretrained(family_dirs[family])
            processor.image_processor.size = {"shortest_edge": 3136, "longest_edge": 12544}
            cache[family] = (model, processor)
        return cache[family]
    return get


def _images() -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(112, 84, 3, generator=g) * 255).to(torch.uint8).numpy()
    b = (torch.rand(64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
    return [Image.fromarray(a), Image.fromarray(b)]


PROMPTS = ["What shape is this? Answer with one word, please, and think first.", "Count."]


def own_forward(model, processor, image, prompt, completion: torch.Tensor) -> torch.Tensor:
    """Reference: the model's own forward with pixel_values over one prompt + completion [1, T]."""
    enc = processor(text=[ops.chat_text(processor, prompt)], images=[image], return_tensors="pt")
    ids = torch.cat([enc["input_ids"], completion], 1)
    mm = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(completion)], 1)
    out = model(input_ids=ids, pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"],
                mm_token_type_ids=mm)
    L = enc["input_ids"].shape[1]
    return out.logits[:, L - 1: -1]  # [1, T, V] positions predicting the completion


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_vision_once_paths_match_the_models_own_forward(family, loaded, monkeypatch):
    model, processor = loaded(family)
    images = _images()
    encoded = [ops.encode_prompt(processor, image, prompt) for image, prompt in zip(images, PROMPTS)]
    batch = ops.pad_prompts(model, encoded, ops.special_tokens(processor).pad, torch.device("cpu"))
    assert not bool(batch.attention_mask.all())  # the second prompt is left-padded
    n = 2  # completions per prompt share its prefill
    completion = torch.tensor([[7, 8, 9, 10], [11, 12, 13, 14], [15, 16, 17, 18], [19, 20, 21, 22]])  # rows 0,1: prompt 0
    calls = []
    orig = model.model.visual.forward
    monkeypatch.setattr(model.model.visual, "forward", lambda *a, **k: calls.append(1) or orig(*a, **k))
    with torch.no_grad():
        features = ops.image_features(model, batch)
        if family == "qwen3_vl":
            assert features.deepstack and len(features.deepstack[0]) == 2  # two DeepStack layers per image
        decoded = cached_decode_logits(model, batch, features, completion, n)  # [4, T, V]
        index = [0, 0, 1, 1]
        hidden = model.lm_head(ops.completion_hidden(model, batch, features, index, completion))  # [4, T, V]
        assert len(calls) == 1  # one vision pass for prefill, decode and the shared-feature forward
        for r in range(4):
            p = r // n
            ref = own_forward(model, processor, images[p], PROMPTS[p], completion[r: r + 1])
            torch.testing.assert_close(decoded[r: r + 1], ref, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(hidden[r: r + 1], ref, atol=1e-4, rtol=1e-4)


def test_families_and_box_conventions():
    assert resolve_coords("auto", FAMILIES["qwen2_vl"]) == ("rel1000", None)
    assert resolve_coords("auto", FAMILIES["qwen2_5_vl"]) == ("resized", None)
    assert resolve_coords("auto", FAMILIES["qwen3_vl"]) == ("rel1000", None)
    assert resolve_coords("auto", FAMILIES["qwen3_5"]) == ("rel1000", None)
    # an explicit value that contradicts the family is kept, with a warning naming both
    coords, warning = resolve_coords("rel1000", FAMILIES["qwen2_5_vl"])
    assert coords == "rel1000" and "rel1000" in warning and "Qwen2.5-VL" in warning and "resized" in warning
    with pytest.raises(UnsupportedModel, match="not supported yet: gemma3"):
        family_of("gemma3")


# ----------------------------------------------------------------------------- templates and rewards


def test_qwen3_5_completion_after_the_templates_think_earns_the_format_reward(loaded):
    from visualrft_lite.rewards import score

    _, processor = loaded("qwen3_5")
    assert ops.chat_text(processor, "Which shape?").endswith("<|im_start|>assistant\n<think>\n")
    assert ops.template_prefix(processor) == "<think>\n"
    # what the model writes after the prompt: the reasoning goes on, the block closes, the answer follows
    written = torch.tensor(ops.tokenize(processor, "A round shape.</think>\n\n<answer>circle</answer>"))
    text = ops.detokenize(processor, [written])[0]
    assert text == "<think>\nA round shape.</think>\n\n<answer>circle</answer>"
    assert score("classify", text, "circle") == {"format": 1.0, "accuracy": 1.0, "total": 2.0}
    # SFT targets do not repeat the template's <think>
    target = ops.completion_tokens(processor, "<think>A round shape.</think> <answer>circle</answer>")
    assert ops.tokenize(processor, "A round shape.</think> <answer>circle</answer>") == target


def test_thinking_switch_reaches_the_template(loaded):
    _, processor = loaded("qwen3_5")
    try:
        ops.set_thinking(processor, "off")
        assert ops.template_prefix(processor) == "<think>\n\n</think>\n\n"
        # with the block closed by the template, the model writes only the answer
        target = ops.completion_tokens(processor, "<think>A round shape.</think> <answer>circle</answer>")
        assert ops.tokenize(processor, "<answer>circle</answer>") == target
        ops.set_thinking(processor, "on")
        assert ops.template_prefix(processor) == "<think>\n"
    finally:
        ops.set_thinking(processor, "auto")
    # families whose template opens nothing: the completion is scored as written
    assert ops.template_prefix(loaded("qwen3_vl")[1]) == ""
    assert ops.template_prefix(loaded("qwen2_5_vl")[1]) == ""


def test_reward_command_scores_as_each_family_means_it():
    from click.testing import CliRunner

    import cli

    def invoke(*args, input):
        return CliRunner().invoke(cli.main, list(args), input=input)

    line = json.dumps({"task": "ground", "completion": "<think>.</think><answer>(10,20),(30,40)</answer>",
                       "solution": [0, 0, 30, 40], "image_size": [100, 200], "resized_size": [100, 200]})
    # Qwen2.5-VL writes pixels of the resized image (here = the original): (10,20)-(30,40), 400 px²
    # inside the 1200 px² truth, IoU 1/3
    result = invoke("reward", "-", "--family", "qwen2_5_vl", input=line)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["iou"] == pytest.approx(1 / 3)
    # the same text read as Qwen3-VL's 0-1000 boxes is (1,4)-(3,8) in pixels: 8 px², IoU 8/1200
    result = invoke("reward", "-", "--family", "qwen3_vl", input=line)
    assert json.loads(result.stdout)["iou"] == pytest.approx(8 / 1200)
    # Qwen3.5's template opened <think>: a completion that starts inside the block has the format
    line = json.dumps({"task": "classify", "completion": "round.</think>\n<answer>circle</answer>", "solution": "circle"})
    assert json.loads(invoke("reward", "-", "--family", "qwen3_5", input=line).stdout)["format"] == 1.0
    assert json.loads(invoke("reward", "-", input=line).stdout)["format"] == 0.0


# ----------------------------------------------------------------------------- loading


def test_lora_covers_every_attention_like_and_mlp_linear_by_family(family_dirs, capsys):
    # the default targets, resolved for the checkpoint's family (what config.yaml records)
    from visualrft_lite.config import Config, ModelConfig, resolve, with_model
    from visualrft_lite.modeling import load as mload

    expected = {
        # 2 layers x (4 attention + 3 MLP)
        "qwen2_5_vl": {k: 2 for k in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")},
        "qwen3_vl": {k: 2 for k in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")},
        # 4 layers: 3 Gated-DeltaNet (5 projections each) + 1 full attention; an MLP on all 4
        "qwen3_5": {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 1, "gate_proj": 4, "up_proj": 4, "down_proj": 4,
                    "in_proj_qkv": 3, "in_proj_z": 3, "in_proj_a": 3, "in_proj_b": 3, "out_proj": 3},
    }
    for family, counts in expected.items():
        loaded_ = mload.load_base(ModelConfig(name=str(family_dirs[family]), quant="none", device="cpu"))
        assert loaded_.family.model_type == family
        cfg, _ = resolve(with_model(Config(), name=str(family_dirs[family])), loaded_.family)
        mload.add_lora(loaded_, dataclasses.replace(cfg.lora, r=2, alpha=4), gradient_checkpointing=False)
        assert mload.adapted_modules(loaded_.model) == counts, family
        assert "LoRA adapters on" in capsys.readouterr().err  # reported at start-up


@pytest.mark.parametrize("family", ["qwen3_vl_moe", "qwen3_5_moe"])
def test_fused_moe_experts_are_named_not_silently_left_out(family, family_dirs, capsys):
    from visualrft_lite.config import LoraConfig, ModelConfig
    from visualrft_lite.modeling import load as mload

    loaded_ = mload.load_base(ModelConfig(name=str(family_dirs[family]), quant="none", device="cpu"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "fused parameters" in warnings[0] and "never the experts" in warnings[0]
    mload.add_lora(loaded_, LoraConfig(r=2, alpha=4), gradient_checkpointing=False)
    assert not any(".experts." in n and "lora" in n for n, _ in loaded_.model.named_parameters())


def test_an_unsupported_model_type_is_one_line(tmp_path, family_dirs):
    from helpers import assert_one_line_error, invoke

    other = tmp_path / "gemma"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    assert_one_line_error(invoke("predict", image, "--task", "classify", "--model", other,
                                 "--set", "model.device=cpu"), "not supported yet: gemma3")


def test_coords_follow_the_checkpoint_unless_set(family_dirs, capsys):
    from visualrft_lite.config import load_config
    from visualrft_lite.modeling.load import resolve_model

    for family, coords in (("qwen2_5_vl", "resized"), ("qwen3_vl", "rel1000"), ("qwen3_5", "rel1000")):
        cfg = load_config("flowers-1shot", [f"model.name={family_dirs[family]}"])
        assert cfg.model.coords == "auto"
        resolved = resolve_model(cfg)
        assert (resolved.model.coords, resolved.reward.coords) == (coords, coords)
        assert cfg.model.coords == "auto"  # a new config: the one given is never written into
    cfg = load_config("flowers-1shot", [f"model.name={family_dirs['qwen2_5_vl']}", "model.coords=rel1000"])
    assert resolve_model(cfg).model.coords == "rel1000"
    err = capsys.readouterr().err
    assert "model.coords=rel1000" in err and "Qwen2.5-VL writes resized" in err


# ----------------------------------------------------------------------------- every verb, each family


def _overrides(model_dir: Path, shapes_root: Path, **extra: object) -> list[str]:
    base = {
        "model.name": str(model_dir), "model.quant": "none", "model.device": "cpu",
        "model.gradient_checkpointing": False, "model.min_pixels": 3136, "model.max_pixels": 12544,
        "data.source": "synthetic", "data.path": str(shapes_root), "data.task": "classify",
        "rollout.num_generations": 3, "rollout.max_completion_length": 6,
        "train.steps": 2, "train.prompts_per_step": 2, "train.micro_batch_size": 3,
        "train.sft_warmup": 0, "train.save_every": 0, "train.samples_every": 1, "lora.r": 4, "lora.alpha": 8,
        "lora.dropout": 0.0, "train.learning_rate": 1e-2, "eval.heldout": 0, "eval.max_new_tokens": 6,
        "eval.limit": 3,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def lower_half_reward(monkeypatch):
    """A reward a random model reaches by chance (the share of token ids below 1000, from the
    completion's characters), so advantages are non-zero and LoRA B moves."""
    from helpers import patch_rollout_reward

    def reward(completion):
        low = sum(ord(c) % 2 == 0 for c in completion) / max(1, len(completion))
        return {"format": 0.0, "accuracy": low, "total": low}

    patch_rollout_reward(monkeypatch, reward)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_verb_runs_on_the_family(family, family_dirs, shapes_root, tmp_path, lower_half_reward):
    from helpers import invoke
    from safetensors.torch import load_file

    from visualrft_lite import export
    from visualrft_lite.config import load_config, read_yaml
    from visualrft_lite.modeling.load import resolve_model
    from visualrft_lite.train import Plan, Trainer, grpo_step, sft, train

    # train, fp32: the run records the resolved box convention, and the adapter moved
    run = train(load_config("demo", _overrides(family_dirs[family], shapes_root)), out=tmp_path / "run", quiet=True)
    recorded = read_yaml(run / "config.yaml")
    assert recorded["model"]["coords"] == FAMILIES[family].coords
    assert recorded["reward"]["coords"] == FAMILIES[family].coords
    weights = load_file(str(run / "final" / "adapter_model.safetensors"))
    assert any("lora_B" in k and bool(v.abs().sum() > 0) for k, v in weights.items())

    # sft: one supervised step on targets in the model's convention (Qwen3.5: after the template's <think>)
    sft_run = sft(load_config("demo", _overrides(family_dirs[family], shapes_root, **{"train.steps": 1})),
                  out=tmp_path / "sft", quiet=True)
    loss = json.loads((sft_run / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
    assert 0 < loss < float("inf")

    # train, 4-bit: two GRPO steps through NF4 layers (rollout in eval mode, then backward)
    pytest.importorskip("bitsandbytes")
    cfg = resolve_model(load_config("demo", _overrides(family_dirs[family], shapes_root, **{"model.quant": "4bit"})))
    s = Trainer(cfg, tmp_path, Plan.for_train(cfg))
    assert "Linear4bit" in {type(m).__name__ for m in s.model.modules()}
    visual = ops.core(s.model).model.visual
    calls, orig = [], visual.forward
    visual.forward = lambda *a, **k: calls.append(1) or orig(*a, **k)
    for step in range(2):
        m = grpo_step(s)
        assert len(calls) == step + 1  # one vision pass per step: rollout, reference and policy share it
        assert torch.isfinite(torch.tensor([m["loss"], m["kl"]])).all() and m["grad_norm"] > 0, (tmp_path / "skipped.jsonl").read_text()
        assert (m["kl"] > 0) == (step == 1)  # a reference apart from the policy once step 1 moved LoRA B

    # predict, greedy and sampled, on the trained adapter (its run's config: coords included)
    image = tmp_path / "x.png"
    Image.new("RGB", (90, 60), "red").save(image)
    for mode in ("--greedy", "--sample"):
        result = invoke("predict", image, "--task", "classify", "--adapter", run / "final", "--json", mode,
                        "--max-new-tokens", "5", "--set", "model.quant=none", "--set", "model.device=cpu")
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout.splitlines()[0])
        assert "completion" in answer, answer
        if FAMILIES[family].thinking_template:  # predict prints what the template opened
            assert answer["completion"].startswith("<think>\n")

    # eval on the run's data (3 records)
    result = invoke("eval", "--adapter", run / "final", "--out", tmp_path / "eval", "--set", "model.quant=none",
                    "--set", "model.device=cpu")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval").is_dir()

    # merge: the merged checkpoint's logits equal base + adapter on the probe
    report = export.export_merged(run / "final", tmp_path / "merged", dtype="fp32", device="cpu", echo=lambda _: None)
    assert report.max_abs_diff <= report.tolerance
    merged = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert merged["model_type"] == family
