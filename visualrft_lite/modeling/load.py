"""Loading: base model (4-bit / 8-bit / unquantised), processor, LoRA adapters.

The KL reference is never a second model: it is this model with its adapters disabled
(`ops.reference_mode`). The vision tower and `lm_head` stay unquantised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visualrft_lite.atomic import staged
from visualrft_lite.config import Config, LoraConfig, ModelConfig, resolve
from visualrft_lite.errors import UserError
from visualrft_lite.image_tokens import TokenBudget
from visualrft_lite.modeling import processor_files
from visualrft_lite.modeling.adapters import MISMATCH_FLAG, base_mismatch, record_base
from visualrft_lite.modeling.families import Family
from visualrft_lite.modeling.hub import _FIX, check_model_available, checkpoint_family, hub_offline, probe_hub


@dataclass
class Loaded:
    """A model ready for the loop: the (possibly peft-wrapped) model and its processor."""

    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    name: str
    """The resolved base: a hub id or a local directory."""
    family: Family | None = None
    """The checkpoint's family (its model_type)."""


def resolve_model(cfg: Config) -> Config:
    """Before anything slow: the model is reachable, its family is supported, and the config
    resolved for it (`config.resolve`: every model.* auto becomes the checkpoint's value, from
    its config.json and its processor files, no weights read), so a run's config.yaml records
    what its eval/predict/merge reuse. Warnings and notes go to stderr."""
    source = check_model_available(cfg.model.name)
    family = checkpoint_family(source)
    resolved, lines = resolve(cfg, family, processor_files.read_processor(source))
    for line in lines:
        print(line, file=sys.stderr)
    return resolved


def token_budget(cfg: ModelConfig) -> TokenBudget | None:
    """The image token budget of a resolved model section (None while its pixels are auto)."""
    if "auto" in (cfg.min_pixels, cfg.max_pixels):
        return None
    source = check_model_available(cfg.name)
    described = processor_files.read_processor(source)
    factor = described.factor if described is not None and described.factor else checkpoint_family(source).image_factor
    return TokenBudget(int(cfg.min_pixels), int(cfg.max_pixels), factor)


@contextlib.contextmanager
def _quiet_library_notes() -> Iterator[None]:
    """Silence two notes every run would print that name nothing a user can act on: peft reads
    transformers' deprecated `is_gradient_checkpointing` (peft's call, not ours), and
    bitsandbytes' CPU backend mentions an optional kernels package it falls back without."""
    bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = bnb.level
    bnb.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        bnb.setLevel(level)


def pick_device(cfg: ModelConfig) -> torch.device:
    if cfg.device != "auto":
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"model.device={cfg.device} but CUDA is not available; use --set model.device=cpu")
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(cfg: ModelConfig, device: torch.device) -> torch.dtype:
    if device.type == "cpu":
        return torch.float32  # CPU kernels for bf16 are slow and tests want exact fp32
    return {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[cfg.dtype]


def pick_attn(cfg: ModelConfig, device: torch.device) -> str:
    if cfg.attn != "auto":
        if cfg.attn == "flash_attention_2" and (device.type != "cuda" or not _has_flash_attn()):
            raise UserError("model.attn=flash_attention_2 needs CUDA and flash-attn (pip install 'vrft-lite[flash]')")
        return cfg.attn
    return "flash_attention_2" if device.type == "cuda" and _has_flash_attn() else "sdpa"


def _has_flash_attn() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def load_processor(name: str, cfg: ModelConfig, **hub_kwargs: Any) -> Any:
    """The checkpoint's processor; model.min/max_pixels replace its image resize bounds unless
    they are auto (then the checkpoint's own stay), model.thinking sets its template's switch."""
    from transformers import AutoProcessor

    from visualrft_lite.modeling.ops import set_thinking

    processor = AutoProcessor.from_pretrained(name, **hub_kwargs)
    if "auto" not in (cfg.min_pixels, cfg.max_pixels):
        processor.image_processor.size = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
    elif cfg.min_pixels != "auto" or cfg.max_pixels != "auto":  # one auto: the checkpoint's stays
        low, high = processor_files.image_bounds(processor)
        low = low if cfg.min_pixels == "auto" else cfg.min_pixels
        high = high if cfg.max_pixels == "auto" else cfg.max_pixels
        if low is not None and high is not None:
            processor.image_processor.size = {"shortest_edge": min(low, high), "longest_edge": high}
    set_thinking(processor, cfg.thinking)
    return processor


def _quantization_config(cfg: ModelConfig, dtype: torch.dtype) -> Any:
    if cfg.quant == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"model.quant={cfg.quant} needs bitsandbytes (pip install bitsandbytes), or --set model.quant=none")
    from transformers import BitsAndBytesConfig

    # Keep the vision tower and lm_head in full precision: quantising them costs accuracy
    # and breaks backward on some back-ends.
    # transformers 5 matches these from the start of the module name, so name the full path.
    skip = ["lm_head", "model.visual", "visual"]
    if cfg.quant == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def load_base(cfg: ModelConfig, *, quant: str | None = None, dtype: torch.dtype | None = None) -> Loaded:
    """The base model and processor, frozen, on the chosen device."""
    from transformers import AutoModelForImageTextToText

    source = check_model_available(cfg.name)
    name = source.name
    family = checkpoint_family(source)  # an unsupported model_type fails here, before any weight is read
    device = pick_device(cfg)
    dtype = dtype or pick_dtype(cfg, device)
    quant = quant or (family.quant if cfg.quant == "auto" else cfg.quant)  # auto: resolve_model's rule
    qcfg = _quantization_config(dataclasses.replace(cfg, quant=quant), dtype)
    kwargs: dict[str, Any] = dict(dtype=dtype, attn_implementation=pick_attn(cfg, device), use_safetensors=True)
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
        kwargs["device_map"] = {"": device}
    # A cached hub model loads without asking the hub at all (no etag requests, no retries);
    # an incomplete cache falls back to one download after a reachability check.
    hub_kwargs = processor_files.hub_kwargs(source)
    try:
        try:
            model = AutoModelForImageTextToText.from_pretrained(name, trust_remote_code=False, **kwargs, **hub_kwargs)
        except OSError:
            if source.where != "cache" or hub_offline():
                raise
            probe_hub(name)  # the cache holds only part of the model: one download, if the hub answers
            hub_kwargs = dict(cache_dir=source.cache_dir)
            model = AutoModelForImageTextToText.from_pretrained(name, trust_remote_code=False, **kwargs, **hub_kwargs)
    except (OSError, ValueError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        hint = f"; {_FIX}" if source.where != "local" else ""
        raise UserError(f"cannot load model {cfg.name!r}: {first}{hint}") from None
    except Exception as e:  # noqa: BLE001 - a damaged weights file (safetensors' own error type)
        if "safetensor" not in type(e).__module__.lower() + type(e).__name__.lower():
            raise
        raise UserError(f"cannot load model {cfg.name!r}: damaged weights file ({str(e)[:160]}); "
                        f"re-download or re-save the model") from None
    if qcfg is None:
        model.to(device)
    model.requires_grad_(False)
    _no_cpu_repack(model)
    if family.fused_experts:
        print(f"warning: {fused_experts_note(model, family, qcfg is not None)}", file=sys.stderr)
    try:
        processor = load_processor(name, cfg, **hub_kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the processor of {cfg.name!r} (tokenizer / preprocessor files): "
                        f"{str(e).splitlines()[0][:200]}") from None
    return Loaded(model=model, processor=processor, device=device, dtype=dtype, name=name, family=family)


def fused_experts_note(model: torch.nn.Module, family: Family, quantized: bool) -> str:
    """What is and is not adapted / quantised in a model whose MoE experts are fused parameters."""
    fused = [p for n, p in model.named_parameters() if ".experts." in n and p.dim() == 3]
    gb = sum(p.numel() * p.element_size() for p in fused) / 1e9
    quant = "not quantised (bitsandbytes quantises nn.Linear only)" if quantized else "unquantised"
    adapted = "attention" + (" and linear-attention" if "in_proj_qkv" in family.lora_targets else "")
    if any("shared_expert" in n for n, _ in model.named_modules()):
        adapted += " layers and the shared expert's MLP"
    else:
        adapted += " layers"
    return (f"{family.label}: the MoE experts ({len(fused)} fused parameters, {gb:.2f} GB) are {quant}; "
            f"LoRA adapts the {adapted} only, never the experts")


def _no_cpu_repack(model: torch.nn.Module) -> None:
    """bitsandbytes' CPU Linear4bit repacks its weight into an inference-only layout on the
    first forward in eval mode (when AVX512-BF16 is present); a later training forward on the
    repacked weight fails. Rollouts run in eval mode, so switch that path off at load."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def lora_target_regex(cfg: LoraConfig) -> str:
    """Adapters on the language model's linear layers named by lora.target_modules (resolved for
    the family by `config.resolve`), and the vision tower's if asked."""
    names = "|".join(sorted(set(cfg.target_modules)))
    scope = r"(language_model|visual)" if cfg.train_vision else r"language_model"
    vision = r"|.*visual.*\.(qkv|proj|fc1|fc2)" if cfg.train_vision else ""
    return rf".*{scope}.*\.({names}){vision}"


def add_lora(loaded: Loaded, cfg: LoraConfig, *, gradient_checkpointing: bool, seed: int = 0) -> None:
    """Wrap the model with fresh trainable LoRA adapters (in place on `loaded`)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=lora_target_regex(cfg),
        bias="none",
    )
    torch.manual_seed(seed)  # adapter A matrices are random; B starts at zero
    with _quiet_library_notes():
        model = get_peft_model(loaded.model, peft_cfg)
        _finish_trainable(model, loaded.dtype, gradient_checkpointing)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"lora.target_modules {cfg.target_modules} matched no layer of {loaded.name}")
    loaded.model = model
    if int(os.environ.get("RANK", "0")) == 0:
        counts = adapted_modules(model)
        label = loaded.family.label if loaded.family else "model"
        print(f"LoRA adapters on {label}: " + ", ".join(f"{n} {k}" for k, n in counts.items()), file=sys.stderr)


def adapted_modules(model: torch.nn.Module) -> dict[str, int]:
    """How many modules of each kind (its last name: q_proj, in_proj_qkv, ...) carry an adapter."""
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and len(getattr(module, "lora_A", {})) > 0:
            kind = name.rsplit(".", 1)[-1]
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def load_adapter(loaded: Loaded, adapter_dir: str | Path, *, trainable: bool = False,
                 gradient_checkpointing: bool = False, allow_mismatch: bool = False) -> None:
    """Attach a saved PEFT adapter (in place on `loaded`); checks it belongs to this base.

    The base the adapter was trained on (its recorded name and shape fingerprint, see
    `record_base`) must be the one loaded: otherwise a one-line UserError naming both, unless
    `allow_mismatch` (then a warning on stderr; shapes that do not fit still fail).
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    cfg_file = adapter_dir / "adapter_config.json"
    if not cfg_file.is_file():
        raise UserError(f"{adapter_dir} holds no adapter (adapter_config.json missing); pass a run's checkpoint or final/ directory")
    problem = base_mismatch(adapter_dir, loaded)
    if problem is not None:
        if not allow_mismatch:
            raise UserError(f"{problem}; load it on the base it was trained on (drop --model / --base), or pass "
                            f"{MISMATCH_FLAG} if they are the same model")
        print(f"warning: {problem} ({MISMATCH_FLAG})", file=sys.stderr)
    try:
        with _quiet_library_notes():
            model = PeftModel.from_pretrained(loaded.model, str(adapter_dir), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        base = json.loads(cfg_file.read_text()).get("base_model_name_or_path")
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith("size mismatch")), lines[0] if lines else "")
        raise UserError(
            f"adapter {adapter_dir} does not fit base {loaded.name} (trained on {base}): {detail[:200]}"
        ) from None
    if trainable:
        with _quiet_library_notes():
            _finish_trainable(model, loaded.dtype, gradient_checkpointing)
    loaded.model = model


def _finish_trainable(model: Any, dtype: torch.dtype, gradient_checkpointing: bool) -> None:
    # Adapters train in fp32 for stable updates; the base stays in its (quantised) dtype.
    for name, p in model.named_parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False


def fold_adapter(loaded: Loaded) -> None:
    """Fold the LoRA weights into an unquantised base and drop the adapter (in place on `loaded`)."""
    loaded.model = loaded.model.merge_and_unload()
    loaded.model.requires_grad_(False)


def save_model(loaded: Loaded, out: Path) -> None:
    """Save a plain model + processor atomically (`atomic.staged`)."""
    with staged(out) as tmp:
        loaded.model.save_pretrained(str(tmp), safe_serialization=True)
        loaded.processor.save_pretrained(str(tmp))


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
