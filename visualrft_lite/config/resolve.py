"""New configs from old ones: a changed model section (`with_model`), and the config resolved
for the checkpoint it will run on (`resolve`). Nothing writes into a config. Pure.

What `resolve` decides, per model.* setting left at `auto` (an explicit value is kept, with a
warning where the checkpoint cannot honour it):

    coords       the family's box convention
    quant        the family's: 4bit, except none (16-bit LoRA) for Qwen3.5
    min/max_pixels  the checkpoint's own image processor limits
    thinking     on when the template's generation prompt opens <think>, off otherwise
    lora         the default targets become every attention-like and MLP layer of the family
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visualrft_lite.config.sections import Config

if TYPE_CHECKING:
    from visualrft_lite.modeling.families import Family

THINKING_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class CheckpointProcessor:
    """What a checkpoint's own processor files say (read by `modeling.processor_files`)."""

    min_pixels: int | None = None
    max_pixels: int | None = None
    """Its image processor's resize bounds (area in pixels); None when it names none."""
    factor: int | None = None
    """Pixels per image-token side (patch size x spatial merge)."""
    tails: dict[str, str] = field(default_factory=dict)
    """model.thinking (auto / on / off) -> what the generation prompt writes after
    `<|im_start|>assistant\\n`; on and off equal auto where the template has no switch."""


def with_model(cfg: Config, **changes: Any) -> Config:
    """A new Config with model.* changed (and reward.coords following model.coords)."""
    model = dataclasses.replace(cfg.model, **changes)
    return dataclasses.replace(cfg, model=model, reward=dataclasses.replace(cfg.reward, coords=model.coords))


def opens_think(tail: str) -> bool:
    """Does a generation prompt ending in `tail` leave the model inside an open think block?"""
    return "<think>" in tail and "</think>" not in tail


def resolve_thinking(setting: str, tails: dict[str, str], label: str) -> tuple[str, str | None]:
    """model.thinking for a template whose generation prompt ends in `tails[mode]`: (on or off,
    a warning when an explicit request cannot be honoured, or None).

    >>> resolve_thinking("auto", {"auto": "<think>\\n", "on": "<think>\\n", "off": "<think>\\n"}, "X")
    ('on', None)
    >>> resolve_thinking("off", {"auto": "<think>\\n", "on": "<think>\\n", "off": "<think>\\n"}, "X")[1][:60]
    'model.thinking=off but the chat template of X always opens <'
    """
    if not tails:
        return setting, None
    if setting == "auto":
        return ("on" if opens_think(tails["auto"]) else "off"), None
    tail = tails[setting]
    if opens_think(tail) == (setting == "on"):
        return setting, None
    prompt = "<|im_start|>assistant\\n" + tail.replace("\n", "\\n")
    if setting == "off":
        return "on", (f"model.thinking=off but the chat template of {label} always opens <think> (it has no "
                      f"enable_thinking switch): the prompt ends with {prompt}, completions are scored after that "
                      f"<think>, and config.yaml records model.thinking: on")
    return "off", (f"model.thinking=on but the chat template of {label} has no think block to open: the prompt ends "
                   f"with {prompt} and the model starts its turn itself (the format reward still asks for "
                   f"<think>...</think>); config.yaml records model.thinking: off")


def resolve(cfg: Config, family: Family, processor: CheckpointProcessor | None = None) -> tuple[Config, list[str]]:
    """The config for a checkpoint of `family` (whose processor files say `processor`), and the
    lines to print (`warning: ...`, `note: ...`); see the module docstring."""
    from visualrft_lite.modeling.families import ATTENTION_MLP, QLORA_CONCERN, resolve_coords

    lines: list[str] = []
    coords, warning = resolve_coords(cfg.model.coords, family)
    if warning:
        lines.append(f"warning: {warning}")
    quant = family.quant if cfg.model.quant == "auto" else cfg.model.quant
    if family.quant == "none" and cfg.model.quant == "auto":
        lines.append(f"note: model.quant: auto is none for {family.label} (a 16-bit base, bf16 on CUDA): "
                     f"{QLORA_CONCERN}; --set model.quant=4bit quantises it anyway")
    elif family.quant == "none" and quant == "4bit":
        lines.append(f"warning: model.quant=4bit on {family.label}: {QLORA_CONCERN}; model.quant: auto trains it "
                     f"16-bit (more memory)")
    changes: dict[str, Any] = {"coords": coords, "quant": quant}
    if processor is not None:
        for key in ("min_pixels", "max_pixels"):
            if getattr(cfg.model, key) == "auto" and getattr(processor, key) is not None:
                changes[key] = getattr(processor, key)
        thinking, warning = resolve_thinking(cfg.model.thinking, processor.tails, cfg.model.name)
        changes["thinking"] = thinking
        if warning:
            lines.append(f"warning: {warning}")
    low, high = (changes.get(k, getattr(cfg.model, k)) for k in ("min_pixels", "max_pixels"))
    if "auto" not in (low, high) and low > high:  # one of them is the checkpoint's: it gives way
        key, value = ("min_pixels", high) if cfg.model.min_pixels == "auto" else ("max_pixels", low)
        lines.append(f"note: model.{key}: auto is the checkpoint's {changes[key]}, beyond the "
                     f"{'max' if key == 'min_pixels' else 'min'}imum set; using {value}")
        changes[key] = value
    out = with_model(cfg, **changes)
    if set(cfg.lora.target_modules) == set(ATTENTION_MLP):
        out = dataclasses.replace(out, lora=dataclasses.replace(out.lora, target_modules=list(family.lora_targets)))
    return out, lines
