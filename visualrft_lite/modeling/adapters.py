"""An adapter and the base it was trained on: recorded next to every adapter vrft-lite saves
(`record_base`), and checked whenever one is loaded (`base_mismatch`), so an adapter is never
silently applied to another model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visualrft_lite.errors import UserError
from visualrft_lite.modeling.hub import _HUB_ID, resolve_model_name
from visualrft_lite.modeling.tiny import TINY_ALIASES
from visualrft_lite.modeling.tiny_families import FAMILY_ALIASES

MISMATCH_FLAG = "--allow-base-mismatch"
"""The command-line flag that passes `allow_mismatch=True` to `load_adapter` (named in its error)."""

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


def base_mismatch(adapter_dir: str | Path, loaded: Any) -> str | None:
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
