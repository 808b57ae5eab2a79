"""The Qwen VLM families vrft-lite supports, and what each one means by a box. Pure: stdlib only.

A family is the checkpoint's `model_type` (config.json). It decides what the user should
never have to know: the box convention the model was trained to write (`model.coords: auto`
resolves to it), which linear layers of the language model LoRA adapts by default, whether
the MoE experts are fused parameters (which neither LoRA nor bitsandbytes can reach), how
many pixels make one image token, and whether `model.quant: auto` quantises the base.

Box conventions, with where each comes from:
    qwen2_vl     rel1000   integers 0-1000 relative to the image (the Visual-RFT paper's model).
    qwen2_5_vl   resized   absolute pixels of the processor-resized image (Qwen2.5-VL report).
    qwen3_vl     rel1000   Qwen3-VL's README, as quoted in QwenLM/Qwen3-VL issue #1741:
                           "Qwen3-VL's default coordinate system has been changed from the
                           absolute coordinates used in Qwen2.5-VL to relative coordinates
                           ranging from 0 to 1000."
    qwen3_5      rel1000   No words of Qwen's model card were found for Qwen3.5. A Qwen
                           maintainer answering a grounding question on a later Qwen release
                           (QwenLM/Qwen3.8-Flash-Next issue #4, 2026-08-27, after a user wrote that
                           "Qwen-3.5VL" boxes were normalised to [0, 1000]) said "grounding
                           coordinates should still be relative coordinates normalized to [0,
                           1000]"; a third-party page (agent.viscover.site, "Qwen3-VL and 3.5
                           Coordinate System") says the same. Treated as rel1000 until the model
                           card says otherwise; `model.coords` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass

from visualrft_lite.registry import Registry

ATTENTION_MLP = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every attention and MLP linear of a Qwen decoder layer (LoRA's default targets)."""
LINEAR_ATTENTION = ("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj")
"""Gated-DeltaNet (linear attention) projections of Qwen3.5's hybrid layers."""


@dataclass(frozen=True)
class Family:
    """What vrft-lite needs to know about one supported model_type."""

    model_type: str
    label: str
    """As the README and messages name it."""
    coords: str
    """The box convention the checkpoint was trained on (see the module docstring)."""
    lora_targets: tuple[str, ...] = ATTENTION_MLP
    """Every attention-like and MLP linear of the language model, by module name."""
    fused_experts: bool = False
    """MoE experts stored as one fused parameter per layer: no LoRA, no 4-bit for them."""
    thinking_template: bool = False
    """Its chat template opens `<think>` in the generation prompt by default."""
    image_factor: int = 28
    """Pixels per image-token side: patch 14 x spatial merge 2 (Qwen2/2.5-VL), 16 x 2 (Qwen3-VL, Qwen3.5)."""
    quant: str = "4bit"
    """What `model.quant: auto` becomes (see QLORA_CONCERN for Qwen3.5's 16-bit default)."""


QLORA_CONCERN = ("Unsloth's Qwen3.5 fine-tuning guide advises against QLoRA (4-bit) training of Qwen3.5, "
                 "dense or MoE, its quantisation error being larger than usual, and trains bf16 LoRA instead")
"""Why Qwen3.5 trains on a 16-bit base by default (unsloth.ai/docs/models/qwen3.5/fine-tune)."""

FAMILIES: Registry[Family] = Registry("model family", "--family")
for _family in (
    Family("qwen2_vl", "Qwen2-VL", "rel1000"),
    Family("qwen2_5_vl", "Qwen2.5-VL", "resized"),
    Family("qwen3_vl", "Qwen3-VL", "rel1000", image_factor=32),
    Family("qwen3_vl_moe", "Qwen3-VL-MoE", "rel1000", fused_experts=True, image_factor=32),
    Family("qwen3_5", "Qwen3.5", "rel1000", ATTENTION_MLP + LINEAR_ATTENTION, thinking_template=True,
           image_factor=32, quant="none"),
    Family("qwen3_5_moe", "Qwen3.5-MoE", "rel1000", ATTENTION_MLP + LINEAR_ATTENTION, fused_experts=True,
           thinking_template=True, image_factor=32, quant="none"),
):
    FAMILIES.add(_family.model_type, _family, help=f"{_family.label}: boxes {_family.coords}"
                 + (", MoE experts fused (not adapted)" if _family.fused_experts else ""))

COORDS_HELP = {"rel1000": "0-1000 relative boxes", "resized": "pixels of the resized image",
               "pixel": "pixels of the original image"}


class UnsupportedModel(ValueError):
    """A checkpoint whose model_type is not one of FAMILIES."""


def family_of(model_type: str | None) -> Family:
    """The family of a checkpoint's model_type; UnsupportedModel (one line) otherwise."""
    if model_type in FAMILIES:
        return FAMILIES.get(model_type)
    supported = FAMILIES.choices()
    raise UnsupportedModel(f"not supported yet: {model_type or 'unknown model_type'} "
                           f"(vrft-lite supports {supported})")


def resolve_coords(setting: str, family: Family) -> tuple[str, str | None]:
    """`model.coords` for this family: (the value to use, a warning or None).

    `auto` becomes the family's convention; an explicit value is kept, with a warning
    naming both when it contradicts the family.

    >>> resolve_coords("auto", FAMILIES["qwen2_5_vl"])
    ('resized', None)
    >>> resolve_coords("rel1000", FAMILIES["qwen2_5_vl"])[1].split(";")[0]
    'model.coords=rel1000 (0-1000 relative boxes) but Qwen2.5-VL writes resized (pixels of the resized image)'
    """
    if setting == "auto":
        return family.coords, None
    if setting == family.coords:
        return setting, None
    return setting, (f"model.coords={setting} ({COORDS_HELP.get(setting, setting)}) but {family.label} writes "
                     f"{family.coords} ({COORDS_HELP[family.coords]}); keeping {setting} as set "
                     f"(model.coords=auto follows the checkpoint)")
