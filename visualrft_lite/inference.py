"""Inference plumbing shared by `predict`, `eval` and `merge`: which config, which model.

    inference_config   --preset, else the run's config.yaml next to --adapter, else defaults;
                       the base is --model, else the adapter's own base, else model.name
    load_for_inference the base (as configured: 4-bit by default) plus the adapter, eval mode

Answers come from the decoder (`decoder.decode`), greedy or sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visualrft_lite.config import Config, ModelConfig, load_config, with_model
from visualrft_lite.errors import UserError
from visualrft_lite.rundir import RunDir

# ----------------------------------------------------------------------------- config


def run_config_path(adapter: Path) -> Path | None:
    """config.yaml of the run an adapter came from: runs/X/final or runs/X/checkpoints/step-N."""
    run = RunDir.of_adapter(adapter)
    return run / RunDir.CONFIG if run is not None else None


def adapter_base(adapter: Path) -> str | None:
    from visualrft_lite.modeling.adapters import adapter_base_name

    return adapter_base_name(adapter)


def inference_config(
    *,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    adapter: Path | None = None,
    model: str | None = None,
    plugins: Sequence[str] = (),
) -> Config:
    """The config predict/eval/merge run with (see the module docstring for the order)."""
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter} holds no adapter (adapter_config.json missing); "
                        f"pass a run's final/ or checkpoints/step-N directory")
    run = RunDir.of_adapter(adapter) if adapter is not None and preset is None else None
    if run is not None:
        cfg = run.read_config(overrides, plugins=plugins)
    else:
        cfg = load_config(preset, list(overrides), plugins=plugins)
    if model is not None:
        name = model
    elif any(o.strip().startswith("model.name=") for o in overrides):
        name = cfg.model.name
    else:
        name = (adapter_base(adapter) if adapter is not None else None) or cfg.model.name
    return with_model(cfg, name=name)


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
