"""Class-per-folder images: `root/<class>/*.jpg`, or `root/{train,test}/<class>/*.jpg`.

Label names are the folder names with underscores as spaces. `shots` draws k images per class
with a seed per (seed, class), skipping unreadable files so a class still gets k when it can.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from visualrft_lite.data.common import (
    IMAGE_EXTENSIONS,
    SHORT_CLASS,
    ImageChecker,
    LoadResult,
    match_names,
    seeded_order,
    take_usable,
)
from visualrft_lite.data.records import Record
from visualrft_lite.errors import UserError

if TYPE_CHECKING:
    from visualrft_lite.config import DataConfig

EVAL_SPLITS = ("test", "val", "validation")


def label_name(folder: str) -> str:
    """'british_shorthair' -> 'british shorthair'."""
    return " ".join(folder.replace("_", " ").split())


def split_dir(root: Path, split: Literal["train", "eval"], key: str) -> Path:
    """`root/train` or `root/test|val` when the root holds splits; else the root itself."""
    evals = [root / s for s in EVAL_SPLITS if (root / s).is_dir()]
    if (root / "train").is_dir() and evals:
        return root / "train" if split == "train" else evals[0]
    if split == "eval" and key == "data.path":
        raise UserError(f"{root} has no test/ split to evaluate on; set data.eval_path to a held-out class-per-folder directory")
    return root


def class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise UserError(f"{root} has no class sub-folders; a folder dataset is root/<class>/<image files>")
    return dirs


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def load_folder(root: Path, cfg: DataConfig, split: Literal["train", "eval"], key: str = "data.path") -> LoadResult:
    """One classification record per image; k-shot per class on the train split only."""
    base = split_dir(root, split, key)
    skipped: Counter[str] = Counter()
    checker = ImageChecker(skipped)
    dirs = {label_name(d.name): d for d in class_dirs(base)}
    names = list(dirs)
    if cfg.categories:
        names = match_names(cfg.categories, names, "data.categories", str(base))
    shots = cfg.shots if split == "train" else None
    synonyms = {label_name(k): list(v) for k, v in cfg.synonyms.items()}

    records: list[Record] = []
    for name in names:
        files = image_files(dirs[name])
        order = seeded_order(files, cfg.seed, name) if shots is not None else files

        def usable(path: Path, name: str = name) -> Record | None:
            size = checker.size(path)
            if size is None:
                return None
            return Record(
                image=str(path),
                task="classify",
                solution={"label": name, "synonyms": synonyms.get(name, [])},
                fields={"kind": cfg.kind, "attribute": cfg.attribute, "labels": names},
                image_size=size,
                meta={"source": "folder", "class_dir": dirs[name].name, "file_name": str(path.relative_to(base))},
            )

        picked = take_usable(order, shots, usable)
        if shots is not None and len(picked) < shots:
            skipped[SHORT_CLASS] += 1
        records.extend(picked)
    return LoadResult(records, skipped)
