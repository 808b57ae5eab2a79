"""Writing files and folders so that a crash never leaves a half-written one where a whole one was.

Every save of vrft-lite goes through here: `write_text` / `write_bytes` for one file, `staged`
for a folder (a checkpoint, final/, the SFT model, a merged model). Both write next to the
target, fsync, and move into place with one rename; what they leave is readable like any
`save_pretrained` output (files 0644, folders 0755, less the umask). Pure: stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def finish(folder: Path) -> None:
    """Every file under `folder` fsync'ed and readable (0644 / 0755 less the umask), the folder itself too."""
    mask = _umask()
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink():
            continue
        path.chmod((0o755 if path.is_dir() else 0o644) & ~mask)
        if path.is_file():
            _fsync(path)
    folder.chmod(0o755 & ~mask)
    _fsync(folder)


def write_bytes(path: Path, data: bytes) -> None:
    """`path` holds `data` or what it held before, never a part of it."""
    tmp = path.with_name(f".tmp-{path.name}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.chmod(0o644 & ~_umask())
    os.replace(tmp, path)
    _fsync(path.parent)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged(target: Path, *, inside: bool = False, before_commit: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends without an error its contents become
    `target` in one move, and the staging folder is gone either way.

    By default the staging folder is `target`'s sibling `.tmp-<name>` and replaces `target`
    whole (an earlier version is removed only after the new one is in place). With `inside`,
    staging lives in `target/.tmp-stage` and each staged entry is moved into `target`, so
    nothing outside `target` is touched (a merge into a folder the user named);
    `before_commit` runs just before the move (removing an earlier output's files). Readers
    ignore a leftover staging folder: its name never matches what they look for.
    """
    if inside:
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / ".tmp-stage"
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except Exception:  # a failed save leaves nothing behind; a kill (or Ctrl-C) leaves the staging
        shutil.rmtree(tmp, ignore_errors=True)  # folder, which the next save of the same target clears
        raise
    try:
        finish(tmp)
        if before_commit is not None:
            before_commit()
        if inside:
            for item in sorted(tmp.iterdir()):
                os.replace(item, target / item.name)
        elif target.exists():
            old = target.with_name(f".old-{target.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old)
        else:
            os.rename(tmp, target)
        _fsync(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
