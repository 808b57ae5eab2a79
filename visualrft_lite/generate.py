"""Inference plumbing shared by `predict`, `eval` and `merge`: which config, which model.

    inference_config   --preset, else the run's config.yaml next to --adapter, else defaults;
                       the base is --model, else the adapter's own base, else model.name
    load_for_inference the base (as configured: 4-bit by default) plus the adapter, eval mode

Answers come from the rollout's decoder (`rollout.decode`), greedy or sampled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visualrft_lite.config import Config, ModelConfig, apply_overrides, config_from_dict, load_config, read_yaml
from visualrft_lite.errors import UserError

# ----------------------------------------------------------------------------- config


def run_config_path(adapter: Path) -> Path | None:
    """config.yaml of the run an adapter came from: runs/X/final or runs/X/checkpoints/step-N."""
    for folder in (adapter.parent, adapter.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


def adapter_base(adapter: Path) -> str | None:
    from visualrft_lite.modeling.load import adapter_base_name

    return adapter_base_name(adapter)


def inference_config(
    *,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    adapter: Path | None = None,
    model: str | None = None,
) -> Config:
    """The config predict/eval/merge run with (see the module docstring for the order)."""
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter} holds no adapter (adapter_config.json missing); "
                        f"pass a run's final/ or checkpoints/step-N directory")
    run_cfg = run_config_path(adapter) if adapter is not None and preset is None else None
    if run_cfg is not None:
        cfg = config_from_dict(apply_overrides(read_yaml(run_cfg), list(overrides)), str(run_cfg))
    else:
        cfg = load_config(preset, list(overrides))
    if model is not None:
        name = model
    elif any(o.strip().startswith("model.name=") for o in overrides):
        name = cfg.model.name
    else:
        name = (adapter_base(adapter) if adapter is not None else None) or cfg.model.name
    cfg.model = dataclasses.replace(cfg.model, name=name)
    return cfg


def model_config_for(adapter: Path, *, model: str | None, overrides: Sequence[str] = ()) -> ModelConfig:
    """The model section for an adapter: its run's settings (pixels, coords), its base."""
    return inference_config(overrides=overrides, adapter=adapter, model=model).model


# ----------------------------------------------------------------------------- model


def load_for_inference(cfg: ModelConfig, adapter: Path | None, *, allow_mismatch: bool = False) -> Any:
    """`modeling.load.Loaded` with the adapter attached (not merged), in eval mode.

    An adapter trained on another base is refused unless `allow_mismatch` (--allow-base-mismatch).
    """
    from visualrft_lite.modeling import load as mload

    loaded = mload.load_base(cfg)
    if adapter is not None:
        mload.load_adapter(loaded, adapter, trainable=False, allow_mismatch=allow_mismatch)
    loaded.model.eval()
    return loaded
