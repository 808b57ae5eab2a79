"""Inference plumbing shared by `predict`, `eval` and `merge`: which config, which model.

    inference_config   --preset, else the run's config.yaml next to --adapter, else defaults;
                       the base is --model, else the adapter's own base, else model.name
    load_for_inference the base (as configured: 4-bit by default) plus the adapter, eval mode
    template_reading   how `vrft-lite reward --run / --model` reads completions: the run's or
                       the checkpoint's template prefix and reward section

Answers come from the decoder (`decoder.decode`), greedy or sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visualrft_lite.config import Config, ModelConfig, load_config, with_model
from visualrft_lite.errors import UserError
from visualrft_lite.image_tokens import TokenBudget
from visualrft_lite.rewards import RewardOptions
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


# ----------------------------------------------------------------------------- reward


def template_reading(*, model: str | None = None, run: Path | None = None,
                     plugins: Sequence[str] = ()) -> tuple[RewardOptions, str]:
    """The reward section and template prefix that score completions as training did: a run's
    (`run`: its config.yaml's model, model.thinking, box convention and reward section) or a
    checkpoint's (`model`: its own template, thinking as the template defaults, its family's
    boxes). The prefix is what the generation prompt already wrote of the assistant's turn
    ("<think>\\n" for a template that opens the think block), as `modeling.ops.template_prefix`
    gives the trainer. Reads the checkpoint's config.json and processor files, no weights."""
    from visualrft_lite.config import resolve
    from visualrft_lite.modeling.hub import check_model_available, checkpoint_family
    from visualrft_lite.modeling.processor_files import read_processor

    if run is not None:
        cfg = RunDir(run).read_config(plugins=plugins)
    else:
        cfg = with_model(load_config(None, plugins=plugins), name=str(model))
    source = check_model_available(cfg.model.name)
    processor = read_processor(source)
    cfg, _ = resolve(cfg, checkpoint_family(source), processor)  # a run's config is resolved already
    if processor is None:
        raise UserError(f"cannot load the processor of {cfg.model.name!r} (tokenizer / chat template files) to "
                        f"read its template; pass --family instead")
    return cfg.reward, processor.tails.get(cfg.model.thinking, processor.tails["auto"])


def budget_for(cfg: Config) -> tuple[TokenBudget | None, str]:
    """The image token budget `cfg` will train with, resolved for its checkpoint (config.json and
    processor files only), or None and the one-line reason it cannot be known yet."""
    from visualrft_lite.config import resolve
    from visualrft_lite.modeling.hub import check_model_available, checkpoint_family
    from visualrft_lite.modeling.load import token_budget
    from visualrft_lite.modeling.processor_files import read_processor

    try:
        source = check_model_available(cfg.model.name)
        resolved, _ = resolve(cfg, checkpoint_family(source), read_processor(source))
        budget = token_budget(resolved.model)
    except UserError as e:
        return None, str(e)
    return budget, "" if budget is not None else f"{cfg.model.name} names no image pixel limits"
