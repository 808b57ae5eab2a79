"""LISA's ReasonSeg as released, and Visual-RFT's converted `lisa_train.json`.

ReasonSeg: `train/`, `val/`, `test/`, each with `<id>.jpg` + `<id>.json` (labelme style):
`text` (a list of instructions), `is_sentence`, `shapes` (each with `label`, `points`). There
are no boxes: the target is the bounds of the polygons whose label says "target"; shapes
labelled "flag" (deprecated) or "ignore" are not targets, as in LISA's own mask code. One
grounding record per instruction. The eval split is `test/` (779 images), else `val/`.

`lisa_train.json` (Visual-RFT's conversion): a JSON array of
{"image_path", "instruction": [...], "boxes": [[x1, y1, x2, y2], ...]} in pixels; one record
per instruction, the box being the bounds of `boxes`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from visualrft_lite.data.common import NO_VALID_BOX, ImageChecker, LoadResult, clip_boxes
from visualrft_lite.data.records import Record
from visualrft_lite.errors import UserError

if TYPE_CHECKING:
    from visualrft_lite.config import DataConfig

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("test", "val")
LISA_KEYS = ("image_path", "instruction", "boxes")


def is_reasonseg_dir(path: Path) -> bool:
    """A ReasonSeg root (split folders of image + json pairs) or one split folder."""
    return any(_pairs(d, require_image=True, limit=1) for d in (*(path / s for s in SPLITS), path) if d.is_dir())


def _pairs(folder: Path, *, require_image: bool = False, limit: int | None = None) -> list[tuple[Path, Path]]:
    """(<id>.json, <id>.jpg) pairs of a split folder; a json without its image pairs with the
    .jpg it should have had (skipped later as a missing image, by name)."""
    out = []
    for js in sorted(folder.glob("*.json")):
        image = next((js.with_suffix(s) for s in (".jpg", ".png", ".jpeg") if js.with_suffix(s).exists()), js.with_suffix(".jpg"))
        if require_image and not image.exists():
            continue
        out.append((js, image))
        if limit is not None and len(out) >= limit:
            break
    return out


def split_folder(root: Path, split: Literal["train", "eval"], key: str) -> Path:
    """root/train for training, root/test (else val) for evaluation; a split folder given directly
    trains on itself and evaluates on its test/ (else val/) sibling."""
    if (root / "train").is_dir() or any((root / s).is_dir() for s in EVAL_SPLITS):
        names = ("train",) if split == "train" else EVAL_SPLITS
        parent = root
    elif split == "train" or key == "data.eval_path":
        return root
    else:
        names, parent = EVAL_SPLITS, root.parent
    for name in names:
        if (parent / name).is_dir():
            return parent / name
    raise UserError(f"{parent} has no {' or '.join(n + '/' for n in names)} folder of ReasonSeg image + json pairs ({key})")


def target_box(shapes: Any) -> list[float] | None:
    """Bounds of the target polygons (not 'flag' or 'ignore' shapes); None when there is none."""
    xs: list[float] = []
    ys: list[float] = []
    for shape in shapes if isinstance(shapes, list) else []:
        label = str(shape.get("label", "")).lower()
        if label == "flag" or "ignore" in label or "target" not in label:
            continue
        for point in shape.get("points") or []:
            xs.append(float(point[0]))
            ys.append(float(point[1]))
    if not xs:
        return None
    return [min(xs), min(ys), max(xs), max(ys)]


def _read_json(path: Path) -> Any:
    raw = path.read_bytes()
    for encoding in ("utf-8", "cp1252"):  # a few released files are not UTF-8 (LISA reads them as cp1252 too)
        try:
            return json.loads(raw.decode(encoding))
        except UnicodeDecodeError:
            continue
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    raise UserError(f"{path} is neither UTF-8 nor cp1252 text")


def _record(image: Path, query: str, box: list[float], size: tuple[int, int], meta: dict[str, Any]) -> Record:
    return Record(image=str(image), task="ground", solution=box, fields={"query": query}, image_size=size, meta=meta)


def load_reasonseg(root: Path, cfg: DataConfig, split: Literal["train", "eval"], key: str = "data.path") -> LoadResult:
    """One grounding record per (image, instruction) of a ReasonSeg split folder."""
    folder = split_folder(root, split, key)
    skipped: Counter[str] = Counter()
    checker = ImageChecker(skipped, key)
    records: list[Record] = []
    pairs = _pairs(folder)
    if not pairs:
        raise UserError(f"{folder} holds no <id>.jpg + <id>.json pairs; expected ReasonSeg's train/, val/, test/ ({key})")
    for js, image in pairs:
        ann = _read_json(js)
        if not isinstance(ann, dict) or "shapes" not in ann or "text" not in ann:
            raise UserError(f"{js}: not a ReasonSeg annotation (needs 'text' and 'shapes')")
        texts = ann["text"] if isinstance(ann["text"], list) else [ann["text"]]
        size = checker.size(image)
        if size is None:
            continue
        box = target_box(ann["shapes"])
        boxes = clip_boxes([box], size, skipped) if box is not None else []
        if not boxes:
            checker.skip(NO_VALID_BOX, str(image), f"{js.name} has no target polygon inside the image")
            continue
        meta = {"source": "reasonseg", "file_name": image.name, "is_sentence": bool(ann.get("is_sentence"))}
        for i, text in enumerate(t for t in texts if isinstance(t, str) and t.strip()):
            records.append(_record(image, " ".join(text.split()), boxes[0], size, {**meta, "instruction_index": i}))
    return LoadResult(records, skipped, checker.entries)


def is_lisa_item(row: Any) -> bool:
    return isinstance(row, dict) and all(k in row for k in LISA_KEYS)


def resolve_lisa_image(raw: str, json_path: Path, cfg: DataConfig) -> Path:
    """The image of a lisa_train.json row: as written, else its file name under data.image_root,
    the json's folder, or a train/ folder next to it (the paths were absolute on the author's machine)."""
    path = Path(raw).expanduser()
    roots = [Path(cfg.image_root).expanduser()] if cfg.image_root else []
    roots += [json_path.parent, json_path.parent / "train"]
    if not path.is_absolute():
        candidates = [r / path for r in roots]
    else:
        candidates = [path]
    candidates += [r / path.name for r in roots]
    return next((c for c in candidates if c.exists()), candidates[0])


def load_lisa_array(path: Path, rows: list[Any], cfg: DataConfig, key: str = "data.path") -> LoadResult:
    """Visual-RFT's lisa_train.json rows -> one grounding record per instruction."""
    skipped: Counter[str] = Counter()
    checker = ImageChecker(skipped, "data.image_root")
    records: list[Record] = []
    for index, row in enumerate(rows):
        if not is_lisa_item(row):
            raise UserError(f"{path}: item {index} lacks {', '.join(k for k in LISA_KEYS if k not in (row or {}))} "
                            f"(Visual-RFT's lisa_train.json items have image_path, instruction, boxes)")
        image = resolve_lisa_image(str(row["image_path"]), path, cfg)
        size = checker.size(image)
        if size is None:
            continue
        try:
            raw = [[float(v) for v in b] for b in row["boxes"]]
        except (TypeError, ValueError):
            raise UserError(f"{path}: item {index}: boxes must be [[x1, y1, x2, y2], ...] in pixels") from None
        raw = [b for b in raw if len(b) == 4]
        union = [min(b[0] for b in raw), min(b[1] for b in raw), max(b[2] for b in raw), max(b[3] for b in raw)] if raw else None
        boxes = clip_boxes([union], size, skipped) if union else []
        if not boxes:
            checker.skip(NO_VALID_BOX, str(image), f"item {index} of {path.name}")
            continue
        texts = row["instruction"] if isinstance(row["instruction"], list) else [row["instruction"]]
        for i, text in enumerate(t for t in texts if isinstance(t, str) and t.strip()):
            records.append(_record(image, " ".join(text.split()), boxes[0], size,
                                   {"source": "lisa_json", "file_name": image.name, "item": index, "instruction_index": i}))
    return LoadResult(records, skipped, checker.entries)
