"""Skipped files, named: the console lines, `skipped.jsonl`, and the eval-time decode check.

A run directory and an eval directory both keep `skipped.jsonl`, one JSON object per file
left out: {"path", "reason", "stage", "detail"}. The console shows the first few.

    result = load_records(cfg.data, "eval")
    records, late = readable_records(result.records, stage="eval")   # full decode, once each
    for line in skipped_lines(result.files + late): print(line)
    write_skipped(out / "skipped.jsonl", result.files + late)
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from visualrft_lite.data.common import Skip
from visualrft_lite.data.images import ImageLoadError, load_image
from visualrft_lite.data.records import Record

__all__ = ["Skip", "readable_records", "skip_of", "skipped_lines", "unreadable", "write_skipped"]


def write_skipped(path: Path, entries: Iterable[Skip], *, append: bool = False) -> int:
    """Write one JSON line per skipped file; returns how many. Writes an empty file when none,
    so a run directory says "nothing was skipped" rather than nothing at all. `append` adds
    the images that fail later, mid-run, to the entries written at load time."""
    n = 0
    with Path(path).open("a" if append else "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(dataclasses.asdict(entry), ensure_ascii=False) + "\n")
            n += 1
    return n


def skipped_lines(entries: Sequence[Skip], first: int = 5) -> list[str]:
    """Console lines: a count per reason, then the first few files with their reasons.

    >>> skipped_lines([Skip("a.jpg", "missing image", "train", "data.image_root")])
    ['skipped 1 file: 1 missing image', '  a.jpg: missing image (data.image_root)']
    """
    if not entries:
        return []
    counts = Counter(e.reason for e in entries)
    head = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    lines = [f"skipped {len(entries)} file{'s' if len(entries) != 1 else ''}: {head}"]
    for e in entries[:first]:
        lines.append(f"  {e.path}: {e.reason}{f' ({e.detail})' if e.detail else ''}")
    if len(entries) > first:
        lines.append(f"  ... {len(entries) - first} more in skipped.jsonl")
    return lines


def skip_of(record: Record, error: BaseException, stage: str) -> Skip:
    """The entry for a record whose image failed after loading (a truncated JPEG that passed
    the cheap probe): what the trainer logs when `load_image` raises mid-run."""
    reason = getattr(error, "reason", "corrupt image")
    return Skip(path=record.image_name, reason=str(reason), stage=stage, detail=" ".join(str(error).split())[:200])


def unreadable(record: Record, detail: str, stage: str) -> Skip:
    """The entry for a record whose image could not be used when it was needed (with the one-line why)."""
    return Skip(path=record.image_name, reason="unreadable image", stage=stage, detail=" ".join(detail.split())[:200])


def readable_records(records: Sequence[Record], stage: str = "eval") -> tuple[list[Record], list[Skip]]:
    """The records whose image fully decodes, and an entry per image that does not.

    Evaluation calls this before generating, so an unreadable image is reported as skipped
    and left out of both sides of the metric (its ground truth is not counted as missed).
    Each distinct image is decoded once; every record of a bad image is dropped (detection
    has one record per (image, category)). Records already holding a PIL image pass.
    """
    verdict: dict[str, Skip | None] = {}
    kept: list[Record] = []
    skips: list[Skip] = []
    for rec in records:
        key = rec.image_name if isinstance(rec.image, (str, Path)) else f"{rec.image_name}#{id(rec.image)}"
        if key not in verdict:
            verdict[key] = None
            if isinstance(rec.image, (str, Path, bytes)):
                try:
                    load_image(rec.image).close()
                except ImageLoadError as e:
                    verdict[key] = skip_of(rec, e, stage)
                    skips.append(verdict[key])
        if verdict[key] is None:
            kept.append(rec)
    return kept, skips
