"""What `config.resolve` makes of a checkpoint: model.quant, pixel limits and thinking (pure),
and the image token arithmetic every start-up line uses (`image_tokens`).

The tails below are what a generation prompt writes after `<|im_start|>assistant\\n` with
model.thinking auto / on / off, as `modeling.ops.thinking_tails` reads them from a template:
    instruct     Qwen2-VL, Qwen2.5-VL, Qwen3-VL Instruct: no think block, no enable_thinking
    always       a template whose generation prompt opens <think> without a switch (the
                 Qwen3-VL Thinking checkpoints' convention)
    switch       Qwen3.5: opens <think>; enable_thinking=False closes an empty block instead
"""

from __future__ import annotations

import pytest

from visualrft_lite.config import Config, ModelConfig, load_config, resolve, with_model
from visualrft_lite.config.resolve import CheckpointProcessor, resolve_thinking
from visualrft_lite.image_tokens import TokenBudget, resized_size
from visualrft_lite.modeling.families import FAMILIES

INSTRUCT = {"auto": "", "on": "", "off": ""}
ALWAYS = {"auto": "<think>\n", "on": "<think>\n", "off": "<think>\n"}
SWITCH = {"auto": "<think>\n", "on": "<think>\n", "off": "<think>\n\n</think>\n\n"}


@pytest.mark.parametrize("setting, tails, expected, warns", [
    ("auto", INSTRUCT, "off", None),  # nothing opened: completions are scored as written
    ("auto", ALWAYS, "on", None),
    ("auto", SWITCH, "on", None),  # Qwen3.5's default
    ("off", SWITCH, "off", None),  # the switch closes the block: honoured
    ("on", SWITCH, "on", None),
    ("off", ALWAYS, "on", "always opens <think>"),  # cannot be turned off: said, and recorded as on
    ("on", INSTRUCT, "off", "has no think block"),  # cannot be turned on: said, recorded as off
    ("off", INSTRUCT, "off", None),  # already off: nothing to say
])
def test_thinking_resolves_to_what_the_prompt_does(setting, tails, expected, warns):
    value, warning = resolve_thinking(setting, tails, "ckpt")
    assert value == expected
    if warns is None:
        assert warning is None
    else:  # one line, naming the request, the template and the prompt it will get
        assert warns in warning and "\n" not in warning and f"model.thinking={setting}" in warning
        assert "the prompt ends with <|im_start|>assistant\\n" in warning


def test_the_warning_spells_out_the_prompt_it_will_be():
    _, warning = resolve_thinking("off", ALWAYS, "Qwen/Qwen3-VL-2B-Thinking")
    assert "the prompt ends with <|im_start|>assistant\\n<think>\\n," in warning


def _cfg(**model):
    return with_model(Config(), **model)


@pytest.mark.parametrize("family, quant, expected, first", [
    ("qwen2_vl", "auto", "4bit", None),  # NF4 as before
    ("qwen3_vl", "auto", "4bit", None),
    ("qwen3_5", "auto", "none", "note: model.quant: auto is none for Qwen3.5"),  # 16-bit LoRA, and why
    ("qwen3_5_moe", "auto", "none", "note: model.quant: auto is none for Qwen3.5-MoE"),
    ("qwen3_5", "4bit", "4bit", "warning: model.quant=4bit on Qwen3.5"),  # kept, with the concern named
    ("qwen3_5", "none", "none", None),
    ("qwen2_vl", "none", "none", None),
])
def test_quant_auto_is_the_familys(family, quant, expected, first):
    out, lines = resolve(_cfg(quant=quant), FAMILIES[family])
    assert out.model.quant == expected
    if first is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith(first)
        assert "Unsloth's Qwen3.5 fine-tuning guide advises against QLoRA" in lines[0]


def test_a_qwen35_checkpoint_named_with_set_trains_16_bit():
    # `--set model.name=<a Qwen3.5 checkpoint>` on a preset: the preset says quant: auto
    cfg = load_config("flowers-1shot", ["model.name=Qwen/Qwen3.5-2B"])
    assert cfg.model.quant == "auto"
    assert resolve(cfg, FAMILIES["qwen3_5"])[0].model.quant == "none"
    assert resolve(cfg, FAMILIES["qwen2_vl"])[0].model.quant == "4bit"
    assert load_config("flowers-1shot-qwen3.5-2b").model.quant == "auto"


QWEN3_VL = CheckpointProcessor(min_pixels=65536, max_pixels=16777216, factor=32, tails=INSTRUCT)


@pytest.mark.parametrize("given, expected, note", [
    ({}, (65536, 16777216), None),  # auto: the checkpoint's own processor
    ({"min_pixels": 4096, "max_pixels": 401408}, (4096, 401408), None),  # a preset's budget is kept
    ({"max_pixels": 401408}, (65536, 401408), None),  # one auto: only that one is the checkpoint's
    # the demo's 50176 cap below Qwen3-VL's own 65536 floor: the floor gives way, and says so
    ({"max_pixels": 50176}, (50176, 50176), "note: model.min_pixels: auto is the checkpoint's 65536"),
])
def test_pixel_limits_auto_are_the_checkpoints(given, expected, note):
    out, lines = resolve(_cfg(quant="4bit", **given), FAMILIES["qwen3_vl"], QWEN3_VL)
    assert (out.model.min_pixels, out.model.max_pixels) == expected
    assert [line for line in lines if line.startswith("note")] == ([] if note is None else lines)
    if note is not None:
        assert lines[0].startswith(note)


def test_pixel_limits_stay_auto_without_the_processor():
    # nothing read (e.g. processor files missing): left for the loaded processor to keep its own
    out, _ = resolve(_cfg(quant="4bit"), FAMILIES["qwen2_vl"])
    assert (out.model.min_pixels, out.model.max_pixels, out.model.thinking) == ("auto", "auto", "auto")


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "lots"])
def test_a_bad_pixel_limit_is_a_one_line_error(value):
    from visualrft_lite.errors import UserError

    with pytest.raises(UserError, match="model.min_pixels must be a positive integer or auto"):
        load_config("demo", [f"model.min_pixels={value}"])


def test_pixel_limits_take_auto_from_set_and_yaml():
    assert load_config("demo", ["model.max_pixels=auto"]).model.max_pixels == "auto"
    assert ModelConfig().min_pixels == ModelConfig().max_pixels == "auto"


# ----------------------------------------------------------------------------- image tokens


@pytest.mark.parametrize("size, factor, limits, expected", [
    # 112x112 on factor 28 inside [3136, 401408]: 4x4 tokens
    ((112, 112), 28, (3136, 401408), 16),
    # the demo: 112 px upscaled to min = max = 50176 = 224^2: 8x8 tokens
    ((112, 112), 28, (50176, 50176), 64),
    # Qwen3-VL's own floor 65536 = 256^2: 112 -> 128 is below it, scaled to ceil(112/0.4375/32)*32 = 256: 8x8
    ((112, 112), 32, (65536, 16777216), 64),
    # 1000x600 on the paper's budget: rounded 1008x588 > 401408, so beta = sqrt(600000/401408) = 1.2226,
    # floor(1000/1.2226/28 = 29.2)*28 = 812, floor(600/1.2226/28 = 17.5)*28 = 476: 29x17 tokens
    ((1000, 600), 28, (3136, 401408), 493),
    # the same image on factor 32 at the same area: rounded 992x608 > 401408; floor(25.6) = 25, floor(15.3) = 15
    ((1000, 600), 32, (4096, 401408), 375),
])
def test_token_counts_by_hand(size, factor, limits, expected):
    assert TokenBudget(limits[0], limits[1], factor).tokens(*size) == expected


def test_resize_matches_the_processors_own_rule():
    # every size on both factors and three budgets, against transformers' smart_resize
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    for factor, low, high in ((28, 3136, 401408), (32, 65536, 16777216), (32, 4096, 401408), (28, 50176, 50176)):
        for w in (1, 27, 56, 112, 333, 640, 1000, 4000):
            for h in (1, 30, 57, 224, 480, 1333):
                if max(w, h) > 200 * min(w, h):
                    with pytest.raises(ValueError):
                        resized_size(w, h, min_pixels=low, max_pixels=high, factor=factor)
                    continue
                rh, rw = smart_resize(h, w, factor, low, high)
                assert resized_size(w, h, min_pixels=low, max_pixels=high, factor=factor) == (rw, rh), (w, h)


def test_the_budget_line_says_per_image_tokens_and_bounds():
    budget = TokenBudget(3136, 401408, 28)
    # 3136 / 784 = 4 and 401408 / 784 = 512 tokens of 28x28 pixels
    assert budget.bounds() == "3136-401408 pixels, 4-512 image tokens (28x28 pixels each)"
    line = budget.describe([(112, 112), (1000, 600), (1, 1000)])  # 16, 493, and one refused (aspect 1000)
    assert line.startswith("image tokens per image: 16 to 493 (median 254.5) over 3 images, 1 refused")
    assert TokenBudget(50176, 50176, 28).describe([(112, 112)] * 3).startswith(
        "image tokens per image: 64 over 3 images; bounds 50176-50176 pixels, 64-64 image tokens")


def test_qwen35_presets_are_placed_in_the_papers_tables():
    # no published figure for Qwen3.5, but its presets and --set model.name runs are named as it
    from visualrft_lite.paper import Setting, setting_for_preset

    assert setting_for_preset("flowers-1shot-qwen3.5-2b") == Setting("flowers", "Qwen3.5-2B", 1)
    assert setting_for_preset("coco-8cat-2shot", model="Qwen/Qwen3.5-2B").model == "Qwen3.5-2B"
