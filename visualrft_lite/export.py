"""`vrft-lite merge`: a trained adapter becomes a plain checkpoint anyone can load.

    checks     the adapter dir holds an adapter; --out is new, empty, or (with --force) an
               earlier merge and nothing else (`rundir.check_output_dir`); the base is --base
               or the adapter config's base, and the adapter must have been trained on it
    merge      `modeling.merge.merge_and_probe`: base in bf16/fp16/fp32 (or NF4 dequantised) +
               adapter -> merge_and_unload, with probe logits before and after
    verify     max |merged - base+adapter| on the probe must stay under the dtype's tolerance
    save       safetensors + config + generation config, and the base checkpoint's processor
               files as it shipped them (image resize bounds, chat templates, tokenizer; with
               --processor run, the run's image resize bounds instead), so
               `AutoModelForImageTextToText.from_pretrained(OUT)` needs no vrft-lite code;
               merge_info.json records the run's training-time pixel limits; staged inside
               --out and moved in only when complete, so a failed merge leaves an earlier one
               where it was
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from visualrft_lite.atomic import staged
from visualrft_lite.errors import UserError
from visualrft_lite.image_tokens import TokenBudget
from visualrft_lite.inference import adapter_base, model_config_for, run_config_path
from visualrft_lite.rundir import check_output_dir

Dtype = Literal["bf16", "fp16", "fp32"]
Processor = Literal["base", "run"]

TOLERANCE: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
"""Allowed max |merged - base+adapter| per unit of logit scale (max(1, max |logit|)).

fp32 merges agree to rounding (~1e-7 on the tiny model); in fp16/bf16 the merged weight
W + s·BA is rounded once to the dtype while base+adapter rounds each product, so logits
differ by a few units in the last place of every layer, accumulated over the depth."""


@dataclass
class MergeReport:
    out: Path
    base: str
    dtype: str
    from_quantized: bool
    max_abs_diff: float
    tolerance: float
    adapter_effect: float
    files: list[str]


def export_merged(
    adapter: Path,
    out: Path,
    *,
    base: str | None = None,
    dtype: Dtype = "bf16",
    from_quantized: bool = False,
    force: bool = False,
    device: str = "auto",
    allow_mismatch: bool = False,
    processor: Processor = "base",
    echo: Callable[[str], None] = print,
) -> MergeReport:
    """Merge `adapter` into its base, verify on a probe input, save a plain checkpoint to `out`."""
    if dtype not in TOLERANCE:
        raise UserError(f"--dtype must be one of {', '.join(TOLERANCE)}; got {dtype!r}")
    if processor not in ("base", "run"):
        raise UserError(f"--processor must be base (the base checkpoint's files) or run (with the run's pixel "
                        f"limits); got {processor!r}")
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter} holds no adapter (adapter_config.json missing); "
                        f"pass a run's final/ or checkpoints/step-N directory")
    if base is None and adapter_base(adapter) is None and run_config_path(adapter) is None:
        raise UserError(f"{adapter}/adapter_config.json names no base model; pass --base ID|DIR")
    cfg = dataclasses.replace(model_config_for(adapter, model=base), device=device, quant="none")
    protected = [adapter] + ([Path(cfg.name)] if Path(cfg.name).exists() else [])
    plan = check_output_dir(out, kind="merge", force=force, protected=protected)  # before the slow part
    if from_quantized:
        _check_bitsandbytes()

    from visualrft_lite.modeling.merge import merge_and_probe, save_merged

    where = "NF4-dequantised" if from_quantized else dtype
    echo(f"merging {adapter} into {cfg.name} ({where} weights, saved as {dtype})")
    try:
        result = merge_and_probe(cfg, adapter, dtype=dtype, from_quantized=from_quantized, allow_mismatch=allow_mismatch)
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"out of GPU memory loading {cfg.name} in {dtype}; merge on the CPU with --device cpu") from None
    tolerance = TOLERANCE[dtype] * max(1.0, result.logit_scale)
    reference = "NF4 base + adapter" if from_quantized else f"{dtype} base + adapter"
    echo(f"probe: max |merged - ({reference})| logits = {result.max_abs_diff:.3g} "
         f"(tolerance {tolerance:.3g}; the adapter itself moves them by up to {result.adapter_effect:.3g})")
    if result.adapter_effect == 0.0:
        echo("note: the adapter does not change the probe's logits at all (LoRA B is zero: an untrained adapter?)")
    if not result.max_abs_diff <= tolerance:  # also catches NaN
        raise UserError(
            f"merged model differs from base + adapter by {result.max_abs_diff:.3g} > {tolerance:.3g} on the probe; "
            f"nothing was written (retry with --dtype fp32, and report it if it persists)"
        )
    from visualrft_lite.modeling.hub import check_model_available
    from visualrft_lite.modeling.load import token_budget
    from visualrft_lite.modeling.processor_files import image_bounds, read_processor

    trained = image_bounds(result.loaded.processor)  # the run's limits, as the probe's processor holds them
    base_files = read_processor(check_model_available(cfg.name))
    shipped = (base_files.min_pixels, base_files.max_pixels) if base_files is not None else (None, None)
    info = {
        "adapter": str(adapter),
        "base": cfg.name,
        "dtype": dtype,
        "from_quantized": from_quantized,
        "dequantized_layers": result.dequantized_layers,
        "probe_max_abs_diff": result.max_abs_diff,
        "probe_tolerance": tolerance,
        "probe_adapter_effect": result.adapter_effect,
        "min_pixels": trained[0],
        "max_pixels": trained[1],
        "processor": processor,
        "processor_pixels": list(trained) if processor == "run" else list(shipped),
        "coords": cfg.coords,
    }
    # Staged inside --out and moved in whole: an earlier merge survives a failed save, and its
    # own files go only once the new ones are complete; nothing outside --out is touched.
    plan.remove = [p for p in plan.remove if p.name != ".tmp-stage"]
    with staged(out, inside=True, before_commit=plan.apply) as staging:
        save_merged(result, staging, dtype, info, processor=processor)
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if plan.note:
        echo(plan.note)
    echo(f"wrote {out}: {', '.join(files)}")
    echo(pixels_line(trained, info["processor_pixels"], processor,
                     token_budget(dataclasses.replace(cfg, min_pixels=trained[0], max_pixels=trained[1]))
                     if None not in trained else None))
    echo(f"load it with AutoModelForImageTextToText.from_pretrained({str(out)!r}), "
         f"or: vrft-lite predict IMAGE --model {out} --set model.quant=none ...")
    return MergeReport(out=out, base=cfg.name, dtype=dtype, from_quantized=from_quantized,
                       max_abs_diff=result.max_abs_diff, tolerance=tolerance,
                       adapter_effect=result.adapter_effect, files=files)


def pixels_line(trained: tuple[int | None, int | None], kept: list[int | None], processor: str,
                budget: TokenBudget | None) -> str:
    """What the merged folder's processor does with images, against what training saw."""
    run = f"{trained[0]}-{trained[1]} pixels" + (f" ({budget.bounds().split(', ', 1)[1]})" if budget else "")
    if processor == "run":
        return f"images: the run trained with {run}; the merged processor has the same (--processor run)"
    if list(trained) == list(kept):
        return f"images: the run trained with {run}, the base's own limits, which the merged processor keeps"
    return (f"images: the run trained with {run}; the merged processor keeps the base's {kept[0]}-{kept[1]} "
            f"(--processor base): pass min_pixels={trained[0]}, max_pixels={trained[1]} to it, or merge with "
            f"--processor run, to see images as training did")


def _check_bitsandbytes() -> None:
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("--from-quantized needs bitsandbytes (pip install bitsandbytes); or merge without it")
