"""New configs from old ones: a changed model section (`with_model`), and the config resolved
for the checkpoint it will run on (`resolve`). Nothing writes into a config. Pure."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from visualrft_lite.config.sections import Config

if TYPE_CHECKING:
    from visualrft_lite.modeling.families import Family


def with_model(cfg: Config, **changes: Any) -> Config:
    """A new Config with model.* changed (and reward.coords following model.coords)."""
    model = dataclasses.replace(cfg.model, **changes)
    return dataclasses.replace(cfg, model=model, reward=dataclasses.replace(cfg.reward, coords=model.coords))


def resolve(cfg: Config, family: Family) -> tuple[Config, list[str]]:
    """The config for a checkpoint of `family`, and the warnings to print.

    model.coords: auto becomes the family's box convention (an explicit value that contradicts
    it stays, with a warning); the default LoRA targets become every attention-like and MLP
    layer of the family (Qwen3.5's linear-attention projections too).
    """
    from visualrft_lite.modeling.families import ATTENTION_MLP, resolve_coords

    coords, warning = resolve_coords(cfg.model.coords, family)
    out = with_model(cfg, coords=coords)
    if set(cfg.lora.target_modules) == set(ATTENTION_MLP):
        out = dataclasses.replace(out, lora=dataclasses.replace(out.lora, target_modules=list(family.lora_targets)))
    return out, [warning] if warning else []
