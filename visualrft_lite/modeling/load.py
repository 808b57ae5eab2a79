"""Loading: base model (4-bit / 8-bit / unquantised), processor, LoRA adapters.

The KL reference is never a second model: it is this model with its adapters disabled
(`ops.reference_mode`). The vision tower and `lm_head` stay unquantised.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visualrft_lite.config import LoraConfig, ModelConfig
from visualrft_lite.errors import UserError

TINY_ALIASES = ("tiny", "vrft-lite/tiny-qwen2-vl")


@dataclass
class Loaded:
    """A model ready for the loop: the (possibly peft-wrapped) model and its processor."""

    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    name: str
    """The resolved base: a hub id or a local directory."""


def resolve_model_name(name: str) -> str:
    """Hub id or local directory; the tiny alias builds (once) and returns the local model."""
    if name in TINY_ALIASES:
        from visualrft_lite.modeling.tiny import ensure_tiny_model

        return str(ensure_tiny_model())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {name} has no config.json; point model.name at a saved model")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise UserError(f"model directory {name} not found (model.name)")
    return name


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


def load_processor(name: str, cfg: ModelConfig) -> Any:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(name)
    # The image resize bounds (area in pixels) of the run, not the checkpoint's defaults.
    processor.image_processor.size = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
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

    name = resolve_model_name(cfg.name)
    device = pick_device(cfg)
    dtype = dtype or pick_dtype(cfg, device)
    qcfg = _quantization_config(dataclasses.replace(cfg, quant=quant or cfg.quant), dtype)
    kwargs: dict[str, Any] = dict(dtype=dtype, attn_implementation=pick_attn(cfg, device), use_safetensors=True)
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForImageTextToText.from_pretrained(name, trust_remote_code=False, **kwargs)
    except OSError as e:
        raise UserError(f"cannot load model {cfg.name!r}: {str(e).splitlines()[0]}") from None
    if qcfg is None:
        model.to(device)
    model.requires_grad_(False)
    _no_cpu_repack(model)
    try:
        processor = load_processor(name, cfg)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the processor of {cfg.name!r} (tokenizer / preprocessor files): "
                        f"{str(e).splitlines()[0][:200]}") from None
    return Loaded(model=model, processor=processor, device=device, dtype=dtype, name=name)


def _no_cpu_repack(model: torch.nn.Module) -> None:
    """bitsandbytes' CPU Linear4bit repacks its weight into an inference-only layout on the
    first forward in eval mode (when AVX512-BF16 is present); a later training forward on the
    repacked weight fails. Rollouts run in eval mode, so switch that path off at load."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def lora_target_regex(cfg: LoraConfig) -> str:
    """Adapters on the language model's linear layers (and the vision tower's if asked)."""
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
    model = get_peft_model(loaded.model, peft_cfg)
    _finish_trainable(model, loaded.dtype, gradient_checkpointing)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"lora.target_modules {cfg.target_modules} matched no layer of {loaded.name}")
    loaded.model = model


def load_adapter(loaded: Loaded, adapter_dir: str | Path, *, trainable: bool = False,
                 gradient_checkpointing: bool = False) -> None:
    """Attach a saved PEFT adapter (in place on `loaded`); checks it belongs to this base."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    cfg_file = adapter_dir / "adapter_config.json"
    if not cfg_file.is_file():
        raise UserError(f"{adapter_dir} holds no adapter (adapter_config.json missing); pass a run's checkpoint or final/ directory")
    try:
        model = PeftModel.from_pretrained(loaded.model, str(adapter_dir), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        base = json.loads(cfg_file.read_text()).get("base_model_name_or_path")
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith("size mismatch")), lines[0] if lines else "")
        raise UserError(
            f"adapter {adapter_dir} does not fit base {loaded.name} (trained on {base}): {detail[:200]}"
        ) from None
    if trainable:
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


def merge_adapters(loaded: Loaded) -> None:
    """Fold the LoRA weights into an unquantised base (in place on `loaded`)."""
    loaded.model = loaded.model.merge_and_unload()
    loaded.model.requires_grad_(False)


def save_model(loaded: Loaded, out: Path) -> None:
    """Save a plain model + processor atomically (temp dir, then rename)."""
    tmp = out.with_name(f".tmp-{out.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    loaded.model.save_pretrained(str(tmp), safe_serialization=True)
    loaded.processor.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    os.rename(tmp, out)


def adapter_base_name(adapter_dir: str | Path) -> str | None:
    cfg_file = Path(adapter_dir) / "adapter_config.json"
    if not cfg_file.is_file():
        return None
    return json.loads(cfg_file.read_text()).get("base_model_name_or_path")


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
