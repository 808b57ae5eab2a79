"""What every source shares: the load result, image checks, seeded sampling, name matching."""

from __future__ import annotations

import difflib
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from visualrft_lite.data.images import ImageLoadError, ImageSource, clip_box, probe_image
from visualrft_lite.data.records import Record
from visualrft_lite.errors import UserError

T = TypeVar("T")

# Skip counter keys, shared so reports and tests spell them one way.
MISSING_IMAGE = "missing image"
CORRUPT_IMAGE = "corrupt image"
BOX_CLIPPED = "box clipped"
BOX_DROPPED = "box dropped (zero area)"
NO_VALID_BOX = "positive without a valid box"
SIZE_MISMATCH = "image size differs from annotation"
BAD_SOLUTION = "unparseable solution"
SHORT_CLASS = "class with fewer images than shots"
NOT_EXHAUSTIVE = "not exhaustively annotated (LVIS)"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


@dataclass
class Skip:
    """One file (or record) left out, and why: a line of skipped.jsonl.

    path:   the file that was tried (for in-memory images, their origin: file:row).
    reason: the skip counter key (MISSING_IMAGE, CORRUPT_IMAGE, ...).
    stage:  where it was left out: "train" / "eval" when loading, "train-step" or "eval-step"
            when the image failed later, while decoding.
    detail: the error, or the setting that controls the path (data.image_root, ...).
    """

    path: str
    reason: str
    stage: str = ""
    detail: str = ""


@dataclass
class LoadResult:
    """The usable records, how many things were skipped or changed by reason, and which files."""

    records: list[Record]
    skipped: Counter[str] = field(default_factory=Counter)
    files: list[Skip] = field(default_factory=list)

    def summary(self) -> str:
        """'12 records; skipped: 1 missing image (first: /d/x.jpg, data.image_root)' (one line for logs)."""
        parts = []
        for reason, n in sorted(self.skipped.items()):
            first = next((s for s in self.files if s.reason == reason), None)
            hint = f" (first: {first.path}{', ' + first.detail if first.detail else ''})" if first else ""
            parts.append(f"{n} {reason}{hint}")
        return f"{len(self.records)} records" + (f"; skipped: {', '.join(parts)}" if parts else "")


class ImageChecker:
    """Probes each image once (size + cheap integrity check), counting and naming failures.

    `setting` names the config key that decides where images are looked for; it goes into
    every missing-image entry so the message says what to change.
    """

    def __init__(self, skipped: Counter[str], setting: str = "data.path") -> None:
        self.skipped = skipped
        self.setting = setting
        self.entries: list[Skip] = []
        self._named: set[tuple[str, str]] = set()
        self._sizes: dict[str, tuple[int, int] | None] = {}

    def skip(self, reason: str, path: str, detail: str = "") -> None:
        """Count a skip and name its file (once per file and reason; the count is per record)."""
        self.skipped[reason] += 1
        if (reason, path) not in self._named:
            self._named.add((reason, path))
            self.entries.append(Skip(path=path, reason=reason, detail=detail))

    def size(self, src: ImageSource, key: str | None = None, name: str | None = None) -> tuple[int, int] | None:
        """(width, height), or None after counting a missing/corrupt image. Cached by `key`.

        `name` is what a skip entry calls an in-memory image (its origin, e.g. file:row).
        """
        key = key if key is not None else (str(src) if isinstance(src, (str, Path)) else None)
        if key is not None and key in self._sizes:
            return self._sizes[key]
        try:
            size: tuple[int, int] | None = probe_image(src)
        except ImageLoadError as e:
            where = str(src) if isinstance(src, (str, Path)) else (name or "<in-memory image>")
            self.skip(e.reason, where, self.setting if e.reason == MISSING_IMAGE else str(e))
            size = None
        if key is not None:
            self._sizes[key] = size
        return size


def clip_boxes(boxes: Iterable[Sequence[float]], size: tuple[int, int], skipped: Counter[str]) -> list[list[float]]:
    """Clip pixel boxes to the image; count the clipped ones and drop (and count) empty ones."""
    out = []
    for box in boxes:
        clipped = clip_box(box, size)
        if clipped is None:
            skipped[BOX_DROPPED] += 1
            continue
        if clipped != [float(v) for v in box]:
            skipped[BOX_CLIPPED] += 1
        out.append(clipped)
    return out


def seeded_order(items: Sequence[T], seed: int, salt: str) -> list[T]:
    """A deterministic shuffle keyed by (seed, salt): adding a class never changes another's draw.

    Python seeds `random.Random` from a str through SHA-512, so this is stable across runs and
    independent of PYTHONHASHSEED.
    """
    out = list(items)
    random.Random(f"{seed}:{salt}").shuffle(out)
    return out


def take_usable(candidates: Sequence[T], k: int | None, usable: Callable[[T], Record | None]) -> list[Record]:
    """The first k candidates (in the given order) that make a usable record; all if k is None."""
    out = []
    for c in candidates:
        if k is not None and len(out) >= k:
            break
        rec = usable(c)
        if rec is not None:
            out.append(rec)
    return out


def norm_name(name: str) -> str:
    """Category names compare case-insensitively with underscores and spaces equivalent."""
    return " ".join(name.replace("_", " ").lower().split())


def match_names(wanted: Sequence[str], available: Sequence[str], key: str, where: str) -> list[str]:
    """The available names matching `wanted` (in wanted's order); UserError with near matches."""
    by_norm: dict[str, str] = {}
    for name in available:
        by_norm.setdefault(norm_name(name), name)
    out = []
    for w in wanted:
        hit = by_norm.get(norm_name(w))
        if hit is None:
            near = difflib.get_close_matches(norm_name(w), list(by_norm), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(by_norm[n]) for n in near)}?" if near else f" ({len(available)} available)"
            raise UserError(f"unknown category {w!r} in {where}{hint} ({key})")
        if hit not in out:
            out.append(hit)
    return out


def require_path(path: str | None, key: str, what: str) -> Path:
    """The dataset path, or a UserError naming the config key."""
    if not path:
        raise UserError(f"{key} is empty; set it to {what} (--set {key}=...)")
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"dataset path {path} not found ({key}); check the path or --set {key}=...")
    return p


def apply_limit(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    """A seeded subset of at most `limit` records, order kept (so a limit spans every class)."""
    if limit is None or len(records) <= limit:
        return records
    keep = sorted(random.Random(f"{seed}:limit").sample(range(len(records)), limit))
    return [records[i] for i in keep]
