"""Loading: base model (4-bit / 8-bit / unquantised), processor, LoRA adapters.

The KL reference is never a second model: it is this model with its adapters disabled
(`ops.reference_mode`). The vision tower and `lm_head` stay unquantised.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from visualrft_lite.config import Config, LoraConfig, ModelConfig
from visualrft_lite.errors import UserError
from visualrft_lite.modeling.families import ATTENTION_MLP, Family, UnsupportedModel, family_of, resolve_coords
from visualrft_lite.modeling.tiny import TINY_ALIASES
from visualrft_lite.modeling.tiny_families import FAMILY_ALIASES

# Two notes every run would print that name nothing a user can act on: peft reads transformers'
# deprecated `is_gradient_checkpointing` (peft's call, not ours), and bitsandbytes' CPU backend
# mentions an optional kernels package it falls back without.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


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


MISMATCH_FLAG = "--allow-base-mismatch"
"""The command-line flag that passes `allow_mismatch=True` to `load_adapter` (named in its error)."""

HUB_PROBE_TIMEOUT_S = 10.0
"""One request, no retries: long enough for a slow link, short enough to fail fast."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")
"""`org/name` or a bare `name`; anything else that does not exist is a missing local directory."""


@dataclass(frozen=True)
class ModelSource:
    """Where a base model will be read from, decided before anything slow happens."""

    name: str
    """What to pass to from_pretrained: a local directory or a hub id."""
    where: Literal["local", "cache", "hub"]
    """A directory on disk; a hub id already in the Hugging Face cache (loaded without asking
    the hub); a hub id the hub just answered for (downloaded on load)."""
    cache_dir: str | None = None


def resolve_model_name(name: str) -> str:
    """Hub id or local directory; the tiny alias builds (once) and returns the local model."""
    if name in TINY_ALIASES:
        from visualrft_lite.modeling.tiny import ensure_tiny_model

        return str(ensure_tiny_model())
    if name in FAMILY_ALIASES:
        from visualrft_lite.modeling.tiny_families import ensure_tiny_family

        return str(ensure_tiny_family(FAMILY_ALIASES[name]))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise UserError(f"model directory {name} has no config.json; point model.name at a saved model")
        return str(path)
    if name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        raise UserError(f"model directory {name} not found (model.name); pass a saved model's directory "
                        f"or a hub id like Qwen/Qwen2-VL-2B-Instruct")
    return name


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), as set now or when huggingface_hub was imported."""
    from huggingface_hub import constants

    return _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE") or constants.is_offline_mode()


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return constants.HF_HUB_CACHE


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


_FIX = "set HF_HUB_OFFLINE=1 to use only the local cache, or point model.name at a local directory"


def check_model_available(name: str) -> ModelSource:
    """Can `name` be loaded? Answers in at most one short hub request, before anything slow.

    A local directory (or the tiny alias) is checked on disk; a hub id is looked up in the
    Hugging Face cache first; only a hub id missing from the cache asks the hub, once, with
    a short timeout and no retries. Every failure is a one-line UserError saying what to do
    (HF_HUB_OFFLINE=1 with a cached copy, or a local directory).
    """
    resolved = resolve_model_name(name)
    if resolved != name or Path(resolved).expanduser().is_dir():
        return ModelSource(resolved, "local")
    from huggingface_hub import try_to_load_from_cache

    cache_dir = hub_cache_dir()
    if isinstance(try_to_load_from_cache(name, "config.json", cache_dir=cache_dir), str):
        return ModelSource(name, "cache", cache_dir)
    if hub_offline():
        raise UserError(f"model {name!r} is not in the Hugging Face cache ({cache_dir}) and HF_HUB_OFFLINE=1 is set; "
                        f"download it once with network access (hf download {name}), or point model.name at a "
                        f"local directory")
    probe_hub(name)
    return ModelSource(name, "hub", cache_dir)


def probe_hub(name: str) -> None:
    """One HEAD request for the model's config.json: a one-line UserError unless the hub has it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    endpoint = hub_endpoint()
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json", endpoint=endpoint), timeout=HUB_PROBE_TIMEOUT_S,
                             retry_on_errors=False)
    except GatedRepoError:
        raise UserError(f"model {name!r} is gated: accept its licence on {endpoint}/{name} and log in "
                        f"(hf auth login), or point model.name at a local directory") from None
    except RepositoryNotFoundError:
        raise UserError(f"model {name!r} not found on {endpoint} (check model.name; a private model needs "
                        f"hf auth login), or point model.name at a local directory") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if getattr(e, "response", None) is not None else "an error"
        raise UserError(f"the hub at {endpoint} answered {status} for {name}/config.json; {_FIX}") from None
    except Exception as e:  # noqa: BLE001 - connection refused, DNS, timeout, TLS: all mean "unreachable"
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120] or type(e).__name__
        raise UserError(f"cannot reach the Hugging Face hub at {endpoint} to fetch {name!r} ({reason}); {_FIX}") from None


def checkpoint_model_type(source: ModelSource) -> str | None:
    """The model_type in the checkpoint's config.json (one small file; no weights read)."""
    if source.where == "local":
        path: str | None = str(Path(source.name) / "config.json")
    else:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        found = try_to_load_from_cache(source.name, "config.json", cache_dir=source.cache_dir)
        path = found if isinstance(found, str) else None
        if path is None and not hub_offline():
            try:
                path = hf_hub_download(source.name, "config.json", cache_dir=source.cache_dir)
            except Exception:  # noqa: BLE001 - the load itself will say what is wrong
                path = None
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def checkpoint_family(source: ModelSource) -> Family:
    """The supported family of a checkpoint; a one-line UserError for any other model_type."""
    try:
        return family_of(checkpoint_model_type(source))
    except UnsupportedModel as e:
        raise UserError(f"{source.name}: {e}") from None


def resolve_model(cfg: Config) -> Family:
    """Before anything slow: the model is reachable, its family is supported, and
    `model.coords: auto` becomes the family's box convention (in place on `cfg`, prompts and
    rewards alike), so a run's config.yaml records the value its eval/predict/merge reuse.

    An explicit model.coords that contradicts the family stays, with a warning naming both.
    """
    source = check_model_available(cfg.model.name)
    family = checkpoint_family(source)
    coords, warning = resolve_coords(cfg.model.coords, family)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    cfg.model = dataclasses.replace(cfg.model, coords=coords)
    cfg.reward = dataclasses.replace(cfg.reward, coords=coords)
    return family


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
    from transformers import AutoProcessor

    from visualrft_lite.modeling.ops import set_thinking

    processor = AutoProcessor.from_pretrained(name, **hub_kwargs)
    # The image resize bounds (area in pixels) of the run, not the checkpoint's defaults.
    processor.image_processor.size = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
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
    qcfg = _quantization_config(dataclasses.replace(cfg, quant=quant or cfg.quant), dtype)
    kwargs: dict[str, Any] = dict(dtype=dtype, attn_implementation=pick_attn(cfg, device), use_safetensors=True)
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
        kwargs["device_map"] = {"": device}
    # A cached hub model loads without asking the hub at all (no etag requests, no retries);
    # an incomplete cache falls back to one download after a reachability check.
    hub_kwargs: dict[str, Any] = {}
    if source.where == "cache":
        hub_kwargs = dict(local_files_only=True, cache_dir=source.cache_dir)
    elif source.where == "hub":
        hub_kwargs = dict(cache_dir=source.cache_dir)
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


def lora_targets(cfg: LoraConfig, family: Family | None = None) -> list[str]:
    """The module names LoRA adapts: the configured ones; the default set means every
    attention-like and MLP linear of the family (Qwen3.5's linear-attention projections too)."""
    if family is not None and set(cfg.target_modules) == set(ATTENTION_MLP):
        return list(family.lora_targets)
    return list(cfg.target_modules)


def lora_target_regex(cfg: LoraConfig, family: Family | None = None) -> str:
    """Adapters on the language model's linear layers (and the vision tower's if asked)."""
    names = "|".join(sorted(set(lora_targets(cfg, family))))
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
        target_modules=lora_target_regex(cfg, loaded.family),
        bias="none",
    )
    torch.manual_seed(seed)  # adapter A matrices are random; B starts at zero
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


# ----------------------------------------------------------------------------- adapter <-> base

BASE_RECORD = "vrft_base.json"
"""Next to every adapter vrft-lite saves: the base it was trained on and its shape fingerprint."""

_FINGERPRINT_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size",
                     "num_attention_heads", "num_key_value_heads", "depth", "embed_dim")


def model_fingerprint(model: Any) -> dict[str, Any]:
    """The base's shapes (text and vision config): a different model almost always differs here."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    found: dict[str, Any] = {}
    if config is None:
        return found
    for prefix, sub in (("", config), ("text.", getattr(config, "text_config", None)),
                        ("vision.", getattr(config, "vision_config", None))):
        if sub is None:
            continue
        for key in _FINGERPRINT_KEYS:
            value = getattr(sub, key, None)
            if isinstance(value, (int, str)) and not isinstance(value, bool):
                found[prefix + key] = value
    return found


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or not _HUB_ID.match(name)


def record_base(adapter_dir: str | Path, model: Any, base_name: str | None = None) -> None:
    """After save_pretrained: make the adapter's base findable from anywhere and recognisable.

    A local base recorded as a relative path (an SFT warm-up's `runs/X/sft_model`) is rewritten
    as an absolute one in adapter_config.json, and BASE_RECORD gets the base's name and
    shape fingerprint, which `load_adapter` compares with the base it is given.
    """
    adapter_dir = Path(adapter_dir)
    cfg_file = adapter_dir / "adapter_config.json"
    adapter_cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    name = base_name or adapter_cfg.get("base_model_name_or_path")
    if name and _looks_local(name) and Path(name).expanduser().exists():
        name = str(Path(name).expanduser().resolve())
        if cfg_file.is_file() and adapter_cfg.get("base_model_name_or_path") != name:
            adapter_cfg["base_model_name_or_path"] = name
            cfg_file.write_text(json.dumps(adapter_cfg, indent=2, sort_keys=True) + "\n")
    (adapter_dir / BASE_RECORD).write_text(json.dumps({"base": name, "fingerprint": model_fingerprint(model)},
                                                      indent=1) + "\n")


def resolve_recorded_base(recorded: str, adapter_dir: str | Path) -> str:
    """A base path recorded by a run, usable from anywhere.

    Tried in order: as written (absolute, or relative to the current folder); relative to
    each folder above the adapter (a run started from the project root recorded
    `runs/X/sft_model`); the same folder name inside the adapter's run (a run directory moved
    or copied elsewhere). A hub id is returned unchanged.
    """
    if not _looks_local(recorded):
        return recorded
    path = Path(recorded).expanduser()
    if (path / "config.json").is_file():
        return str(path.resolve())
    adapter_dir = Path(adapter_dir).expanduser().resolve()
    if not path.is_absolute():
        for folder in adapter_dir.parents:
            if (folder / path / "config.json").is_file():
                return str(folder / path)
    for run in (adapter_dir.parent, adapter_dir.parent.parent):
        if path.name and (run / path.name / "config.json").is_file():
            return str(run / path.name)
    return recorded


def adapter_base_name(adapter_dir: str | Path) -> str | None:
    """The base an adapter was trained on (a hub id, or an absolute local directory when found)."""
    cfg_file = Path(adapter_dir) / "adapter_config.json"
    if not cfg_file.is_file():
        return None
    try:
        recorded = json.loads(cfg_file.read_text()).get("base_model_name_or_path")
    except (ValueError, AttributeError):
        raise UserError(f"{cfg_file} is damaged (not a JSON object); use another checkpoint of the run") from None
    return resolve_recorded_base(recorded, adapter_dir) if recorded else None


def base_identity(name: str) -> str:
    """One spelling per model: an absolute directory, a hub id (a hub cache snapshot maps back
    to its id), the tiny alias as its built folder."""
    if name in TINY_ALIASES or name in FAMILY_ALIASES:
        name = resolve_model_name(name)
    path = Path(name).expanduser()
    if path.name.startswith("tiny-qwen") and "-seed" in path.name:  # a tiny build is its build tag, whichever cache holds it
        return f"tiny:{path.name}"
    if not path.exists():
        return name
    resolved = path.resolve()
    parts = resolved.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--"):].replace("--", "/")  # .../models--Qwen--X/snapshots/<sha>
    return str(resolved)


def _read_base_record(adapter_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((adapter_dir / BASE_RECORD).read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def base_mismatch(adapter_dir: str | Path, loaded: Loaded) -> str | None:
    """Why `adapter_dir` was not trained on `loaded`'s base (one line), or None when it was."""
    adapter_dir = Path(adapter_dir)
    record = _read_base_record(adapter_dir)
    recorded = adapter_base_name(adapter_dir) or record.get("base")
    if record.get("base") and not recorded:
        recorded = resolve_recorded_base(record["base"], adapter_dir)
    theirs = record.get("fingerprint") or {}
    ours = model_fingerprint(loaded.model)
    differ = [k for k in theirs if k in ours and theirs[k] != ours[k]]
    if differ:
        shapes = ", ".join(f"{k} {theirs[k]} vs {ours[k]}" for k in differ[:3])
        return f"adapter {adapter_dir} does not fit base {loaded.name}: it was trained on {recorded} ({shapes})"
    if recorded and base_identity(recorded) != base_identity(loaded.name):
        return f"adapter {adapter_dir} does not fit base {loaded.name}: it was trained on {recorded}"
    return None


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
