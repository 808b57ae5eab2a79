"""Class-per-folder images: `root/<class>/*.jpg`, or `root/{train,test|val|valid}/<class>/*.jpg`.

Label names are the folder names with underscores as spaces, or come from a name map: a
`cat_to_name.json` next to the splits (the widely used Flowers102 re-pack numbers its folders
1..102) or the JSON file named by `data.label_names`. A layout that cannot be a set of
classes is refused: a single class, folders named like splits, or numbers with no map.
`shots` draws k images per class with a seed per (seed, class), skipping unreadable files so
a class still gets k when it can. `class_records` is shared with the official readers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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

EVAL_SPLITS = ("test", "val", "valid", "validation")
SPLIT_NAMES = frozenset(("train", "training", *EVAL_SPLITS))
NAME_MAPS = ("cat_to_name.json", "label_names.json", "class_names.json")


def label_name(folder: str) -> str:
    """'british_shorthair' -> 'british shorthair'."""
    return " ".join(folder.replace("_", " ").split())


def _has_class_dirs(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())


def split_dir(root: Path, split: Literal["train", "eval"], key: str) -> Path:
    """`root/train` or `root/test|val|valid` when the root holds splits; else the root itself.

    A root that is itself `train/` with a held-out sibling evaluates on the sibling.
    """
    evals = [root / s for s in EVAL_SPLITS if _has_class_dirs(root / s)]
    if (root / "train").is_dir() and evals:
        return root / "train" if split == "train" else evals[0]
    if split == "eval" and key == "data.path":
        siblings = [root.parent / s for s in EVAL_SPLITS if _has_class_dirs(root.parent / s)]
        if root.name == "train" and siblings:
            return siblings[0]
        raise UserError(f"{root} has no test/, val/ or valid/ split to evaluate on; set data.eval_path to a held-out "
                        f"class-per-folder directory")
    return root


def class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise UserError(f"{root} has no class sub-folders; a folder dataset is root/<class>/<image files>")
    return dirs


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def read_name_map(path: Path, key: str) -> dict[str, str]:
    """A {folder: class name} JSON object (cat_to_name.json style)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"label name file {path} not found ({key})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a JSON object of folder -> class name ({key}): {' '.join(str(e).split())}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UserError(f"{path} must be a JSON object mapping folder names to class names, e.g. {{\"1\": \"pink primrose\"}} ({key})")
    return {str(k): v for k, v in data.items()}


def find_name_map(root: Path, base: Path, cfg: DataConfig) -> tuple[dict[str, str] | None, str]:
    """The name map and where it came from: data.label_names, else a known file next to the splits."""
    if cfg.label_names:
        path = Path(cfg.label_names).expanduser()
        return read_name_map(path, "data.label_names"), str(path)
    for folder in dict.fromkeys((base, root, root.parent, base.parent)):
        for name in NAME_MAPS:
            if (folder / name).is_file():
                return read_name_map(folder / name, "data.label_names"), str(folder / name)
    return None, ""


def check_classes(base: Path, folders: Sequence[str], name_map: dict[str, str] | None, map_path: str) -> None:
    """Refuse layouts that cannot be a set of classes (each with a one-line fix)."""
    splits = sorted(f for f in folders if f.lower() in SPLIT_NAMES)
    if splits:
        raise UserError(f"{base} holds split folders ({', '.join(splits)}) where class folders belong; point data.path at "
                        f"the folder holding train/ and test/ (or val/, valid/), each with one sub-folder per class")
    if len(folders) == 1:
        raise UserError(f"{base} has a single class folder ({folders[0]!r}); a classification dataset needs one folder "
                        f"per class (for an official download set data.source, e.g. flowers102)")
    if name_map is None and all(f.isdigit() for f in folders):
        raise UserError(f"the class folders of {base} are numbers ({folders[0]}, {folders[1]}, ...) with no names; put "
                        f"cat_to_name.json next to the splits or set data.label_names=FILE (JSON {{folder: name}})")
    if name_map is not None:
        unnamed = [f for f in folders if f not in name_map]
        if unnamed:
            raise UserError(f"class folder {unnamed[0]!r} of {base} has no entry in {map_path} ({len(unnamed)} unnamed); "
                            f"fix the map or data.label_names")


def class_records(
    by_class: dict[str, list[Path]],
    cfg: DataConfig,
    split: Literal["train", "eval"],
    checker: ImageChecker,
    *,
    source: str,
    base: Path,
    where: str,
) -> list[Record]:
    """One classification record per image; k-shot per class (seeded per class) on the train split.

    by_class: class name -> image files, in the dataset's class order.
    """
    names = list(by_class)
    setting, wanted = cfg.categories_for(split)
    if wanted:
        names = match_names(wanted, names, setting, where)
    shots = cfg.shots if split == "train" else None
    synonyms = {label_name(k): list(v) for k, v in cfg.synonyms.items()}
    fields: dict[str, Any] = {"kind": cfg.kind, "attribute": cfg.attribute, "labels": names}

    records: list[Record] = []
    for name in names:
        files = by_class[name]
        order = seeded_order(files, cfg.seed, name) if shots is not None else files

        def usable(path: Path, name: str = name) -> Record | None:
            size = checker.size(path)
            if size is None:
                return None
            try:
                file_name = str(path.relative_to(base))
            except ValueError:
                file_name = str(path)
            return Record(
                image=str(path),
                task="classify",
                solution={"label": name, "synonyms": synonyms.get(label_name(name), [])},
                fields=dict(fields),
                image_size=size,
                meta={"source": source, "file_name": file_name},
            )

        picked = take_usable(order, shots, usable)
        if shots is not None and len(picked) < shots:
            checker.skipped[SHORT_CLASS] += 1
        records.extend(picked)
    return records


def load_folder(root: Path, cfg: DataConfig, split: Literal["train", "eval"], key: str = "data.path") -> LoadResult:
    """One classification record per image; k-shot per class on the train split only."""
    base = split_dir(root, split, key)
    skipped: Counter[str] = Counter()
    checker = ImageChecker(skipped, key)
    dirs = class_dirs(base)
    name_map, map_path = find_name_map(root, base, cfg)
    check_classes(base, [d.name for d in dirs], name_map, map_path)
    by_class: dict[str, list[Path]] = {}
    for d in dirs:
        name = label_name(name_map[d.name]) if name_map is not None else label_name(d.name)
        by_class.setdefault(name, []).extend(image_files(d))
    records = class_records(by_class, cfg, split, checker, source="folder", base=base, where=str(base))
    return LoadResult(records, skipped, checker.entries)
