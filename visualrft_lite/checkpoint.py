"""Atomic, verifiable checkpoints: the adapter in PEFT format plus everything needed to resume.

A checkpoint is written into `checkpoints/.tmp-step-XXXXXX/` (`atomic.staged`), its files
are listed with their sizes and SHA-256 in `manifest.json` and fsync'ed, and only then is
the folder renamed to `checkpoints/step-XXXXXX/`, so a kill while saving leaves the previous
checkpoint loadable. A crash or a full disk can still damage a file later (delayed allocation leaves
it short or zero-filled); `resume_checkpoint` checks each checkpoint against its manifest
(older ones without a manifest: by parsing the files) and resumes from the newest one
intact, saying which it skipped and why.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visualrft_lite.atomic import staged, write_text
from visualrft_lite.errors import UserError
from visualrft_lite.rundir import RunDir

STATE_FILE = "trainer_state.pt"
MANIFEST = "manifest.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "sampling": generator.get_state() if generator is not None else None,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if generator is not None and state.get("sampling") is not None:
        generator.set_state(state["sampling"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model: Any, trainer_state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write checkpoints/step-{step}/ atomically (a re-save of a step replaces it whole); keep the
    newest `keep` (0 = all)."""
    final = run_dir / RunDir.CHECKPOINTS / f"step-{step:06d}"
    with staged(final) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        _record_base(tmp, model)
        torch.save(trainer_state, tmp / STATE_FILE)
        write_manifest(tmp)
    if keep > 0:
        for old in complete_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / RunDir.CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete and intact checkpoint, silently; `resume_checkpoint` says what it skips."""
    for path in reversed(complete_checkpoints(run_dir)):
        if verify_checkpoint(path) is None:
            return path
    return None


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch.load on a damaged file raises nearly anything (KeyError, tar errors)
        raise UserError(f"cannot read {path} ({(str(e).splitlines() or [type(e).__name__])[0][:120]}); "
                        f"it is damaged: delete {checkpoint} to resume from an earlier checkpoint") from None
    if not isinstance(state, dict) or "step" not in state:
        raise UserError(f"{path} is not a vrft-lite trainer state; delete {checkpoint} to resume from an earlier one")
    return state


def resume_checkpoint(run_dir: Path, *, echo: Callable[[str], None] | None = print) -> Path:
    """The newest checkpoint of `run_dir` that is complete and intact, to resume from.

    Newer ones that are damaged (a file missing, short, zero-filled or changed since it was
    saved) or unfinished (a save killed midway) are skipped and `echo` says which and why;
    none usable is a one-line UserError saying how to start the run again.
    """
    root = run_dir / RunDir.CHECKPOINTS
    candidates = sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name)),
                        key=lambda p: int(_STEP_DIR.match(p.name).group(1)), reverse=True) if root.is_dir() else []
    skipped: list[str] = []
    for path in candidates:
        reason = verify_checkpoint(path)
        if reason is None:
            return path
        skipped.append(f"{path.name}: {reason}")
        if echo is not None:
            echo(f"skipping {path}: {reason}")
    again = f"start it again with --out {run_dir} --force"
    if skipped:
        raise UserError(f"{run_dir} has no usable checkpoint ({'; '.join(skipped)[:300]}); {again}")
    unfinished = sorted(p.name for p in root.glob(".tmp-step-*")) if root.is_dir() else []
    why = f" ({unfinished[-1]} was never finished)" if unfinished else " (it stopped before its first save)"
    raise UserError(f"{run_dir} has no checkpoint to resume from{why}; {again}")


def verify_checkpoint(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be resumed from (one phrase), or None when it can."""
    for name in (STATE_FILE, *ADAPTER_FILES):
        if not (path / name).is_file():
            return f"{name} is missing"
    manifest = _read_manifest(path)
    if manifest is not None:
        for name, expected in manifest.items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            size = file.stat().st_size
            if size != expected.get("bytes"):
                return f"{name} is {size} bytes, {expected.get('bytes')} when saved (cut short)"
            if expected.get("sha256") and _sha256(file) != expected["sha256"]:
                return f"{name} changed since it was saved (damaged on disk)"
        return None
    # A checkpoint from before manifests: parse what can be parsed cheaply.
    return _check_safetensors(path / "adapter_model.safetensors") or _check_json(path / "adapter_config.json") \
        or _check_zip(path / STATE_FILE)


def write_manifest(folder: Path) -> None:
    """manifest.json: size and SHA-256 of every file in `folder`."""
    entries = {file.name: {"bytes": file.stat().st_size, "sha256": _sha256(file)}
               for file in sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)}
    write_text(folder / MANIFEST, json.dumps(entries, indent=1))


def _read_manifest(path: Path) -> dict[str, dict[str, Any]] | None:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None  # absent (an older checkpoint) or itself damaged: fall back to parsing
    if not isinstance(manifest, dict) or not all(isinstance(v, dict) for v in manifest.values()):
        return None
    return manifest


def _sha256(file: Path) -> str:
    with file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_safetensors(file: Path) -> str | None:
    """The header parses and the tensors it lists end exactly at the end of the file."""
    size = file.stat().st_size
    try:
        with file.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"{file.name} is cut short ({size} bytes)"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return f"{file.name} is damaged ({size} bytes; its header does not parse)"
    if 8 + n + end != size:
        return f"{file.name} is {size} bytes, its header says {8 + n + end} (cut short)"
    return None


def _check_json(file: Path) -> str | None:
    try:
        json.loads(file.read_text())
    except (OSError, ValueError):
        return f"{file.name} is damaged (not JSON)"
    return None


def _check_zip(file: Path) -> str | None:
    """torch.save writes a zip archive; every member's CRC must match."""
    try:
        with zipfile.ZipFile(file) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return f"{file.name} is damaged ({file.stat().st_size} bytes; not a complete archive)"
    return f"{file.name} is damaged ({bad} fails its checksum)" if bad else None


def _record_base(adapter_dir: Path, model: Any) -> None:
    from visualrft_lite.modeling.adapters import record_base

    record_base(adapter_dir, model)


def save_final(run_dir: Path, model: Any, processor: Any | None = None) -> Path:
    """final/: the adapter (and the processor, so predict/merge need nothing else)."""
    final = run_dir / RunDir.FINAL
    with staged(final) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        _record_base(tmp, model)
        if processor is not None:
            processor.save_pretrained(str(tmp))
        write_manifest(tmp)
    return final
