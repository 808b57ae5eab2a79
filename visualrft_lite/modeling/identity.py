"""Which weights a base model name stands for, cheaply: what an eval's cached answers are keyed on.

    hub id       its id and the snapshot commit the Hugging Face cache holds for it (the
                 folder name under snapshots/), which changes when the model is updated
    local folder its one spelling (`adapters.base_identity`) and a digest of its config.json
                 and of each weight file's name, size and modification time (reading the
                 weights themselves would take longer than the answers they save)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from visualrft_lite.modeling.adapters import base_identity
from visualrft_lite.modeling.hub import hub_cache_dir, resolve_model_name

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def model_identity(name: str) -> dict[str, Any]:
    """{"model": one spelling of the base, "revision": what its weights are}; revision None when
    a hub model is not in the cache (it is after it has been loaded once)."""
    resolved = resolve_model_name(name)
    path = Path(resolved).expanduser()
    if path.is_dir():
        return {"model": base_identity(name), "revision": folder_digest(path)}
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(resolved, "config.json", cache_dir=hub_cache_dir())
    revision = Path(found).parent.name if isinstance(found, str) else None  # .../snapshots/<commit>/config.json
    return {"model": base_identity(resolved), "revision": revision}


def folder_digest(folder: Path) -> str:
    """sha256 of config.json's bytes and each weight file's (name, size, mtime), 16 hex digits."""
    digest = hashlib.sha256()
    config = folder / "config.json"
    digest.update(config.read_bytes() if config.is_file() else b"")
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights]
    digest.update(json.dumps(stats).encode())
    return digest.hexdigest()[:16]
