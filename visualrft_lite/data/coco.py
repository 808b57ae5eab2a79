"""COCO / LVIS instance JSON -> one detection record per (image, category).

Loaded with plain `json` (boxes are all we need; pycocotools is for evaluation). Boxes go
from [x, y, w, h] to pixel [x1, y1, x2, y2], clipped to the image; empty ones are dropped and
counted; crowd annotations are never targets (kept in meta for the evaluator to ignore).

Train split: per category, k images that contain it (`shots`, seeded per (seed, category);
all its boxes of that category are the truth) plus `negatives` images without it ("No
Objects"). Eval split: every eligible image x every selected category, so mAP sees the
false positives too. LVIS is federated: an image is eligible for a category only if the
category is annotated on it or listed in its `neg_category_ids` (verified absent), and
positives listed in `not_exhaustive_category_ids` are not used for training. LVIS records
carry what its federated metric needs in meta: `federated`, the category's `frequency`
(r / c / f), `not_exhaustive`, and the `image_id` that groups an image's categories.

Where things are, as the official downloads leave them: `data.path` is the train json or the
COCO folder (`annotations/instances_train2017.json`, `train2017/`, `val2017/`); without
`data.eval_path` the eval json is the val json next to the train json. Images of each json
sit in the folder named by its split (`instances_val2017.json` -> `val2017/`), found next to
the json unless `data.image_root` / `data.eval_image_root` say where; LVIS names its images
`train2017/...` or `val2017/...` (from `coco_url`), found under the COCO folder.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from visualrft_lite.data.common import (
    NO_VALID_BOX,
    NOT_EXHAUSTIVE,
    SIZE_MISMATCH,
    ImageChecker,
    LoadResult,
    clip_boxes,
    match_names,
    seeded_order,
    take_usable,
)
from visualrft_lite.data.folder import label_name
from visualrft_lite.data.images import xywh_to_xyxy
from visualrft_lite.data.records import Record
from visualrft_lite.errors import UserError

if TYPE_CHECKING:
    from visualrft_lite.config import DataConfig


def read_instances(path: Path, key: str) -> dict[str, Any]:
    if path.is_dir():
        raise UserError(f"{key} must be a COCO/LVIS instances .json file, got the directory {path}")
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"malformed COCO json {path}:{e.lineno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a JSON text file ({key})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise UserError(f"{path} is not COCO instance JSON: it needs 'images', 'annotations' and 'categories' lists ({key})")
    return data


def image_file_name(image: dict[str, Any]) -> str:
    """COCO has `file_name`; LVIS v1 only `coco_url` (.../train2017/000000391895.jpg)."""
    if image.get("file_name"):
        return str(image["file_name"])
    url = str(image.get("coco_url") or "")
    if not url:
        raise UserError(f"image id {image.get('id')} has neither file_name nor coco_url")
    return "/".join(url.split("/")[-2:])


def resolve_image(root: Path, file_name: str) -> Path:
    """root/file_name; failing that root/<base name> (image_root pointing inside the split folder)."""
    path = root / file_name
    if not path.exists() and "/" in file_name:
        alt = root / Path(file_name).name
        if alt.exists():
            return alt
    return path


_SPLIT_DIR = re.compile(r"(train|val|test|minival)(\d{4})")


def split_folder_name(json_path: Path) -> str | None:
    """'val2017' for instances_val2017.json; None for names without one (LVIS, your own)."""
    m = _SPLIT_DIR.search(json_path.stem)
    return m.group(0) if m else None


def _json_in_dir(folder: Path, split_word: str, key: str) -> Path:
    """The instances json of a COCO (or LVIS) folder; COCO's instances_* win over lvis_*."""
    for pattern in (f"instances_{split_word}*.json", f"lvis_v*_{split_word}.json"):
        found = sorted(folder.glob(pattern)) + sorted(folder.glob(f"annotations/{pattern}"))
        if found:
            return found[-1]  # the newest year when several are present
    raise UserError(f"{folder} holds no annotations/instances_{split_word}2017.json or lvis_v1_{split_word}.json ({key}); "
                    f"point {key} at the instances json")


def coco_json(path: Path, split: Literal["train", "eval"], key: str) -> Path:
    """The instances json for a split: `path` itself or the one in a COCO folder; with no
    data.eval_path, the val json next to the train json."""
    if path.is_dir():
        return _json_in_dir(path, "val" if key == "data.eval_path" or split == "eval" else "train", key)
    if split == "eval" and key == "data.path":
        if "train" not in path.name:
            raise UserError(f"{path.name} has no val json to pair with; set data.eval_path to the val instances json")
        val = path.with_name(path.name.replace("train", "val"))
        if not val.is_file():
            raise UserError(f"{val.name} is not next to {path} (the eval split of a train json); "
                            f"set data.eval_path to the val instances json")
        return val
    return path


def image_dir(json_path: Path, data: dict[str, Any], cfg: DataConfig, split: Literal["train", "eval"]) -> tuple[Path, str]:
    """The folder a json's image file names are relative to, and the setting that controls it."""
    setting = "data.eval_image_root" if split == "eval" else "data.image_root"
    want = split_folder_name(json_path)
    explicit = cfg.eval_image_root if split == "eval" else cfg.image_root
    if explicit is None and split == "eval" and cfg.image_root:
        root = Path(cfg.image_root).expanduser()
        if want and _SPLIT_DIR.fullmatch(root.name) and root.name != want:
            # data.image_root names the train images (train2017/); the val json's are in val2017/ next to it
            return root.parent / want, setting
        explicit, setting = cfg.image_root, "data.image_root"
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise UserError(f"image directory {explicit} not found ({setting})")
        return root, setting
    here = json_path.parent
    candidates = [here / want, here.parent / want] if want else []
    candidates += [here, here.parent, here.parent / "coco", here / "coco"]
    candidates += [here.parent / "coco" / want] if want else []
    candidates = [c for c in dict.fromkeys(candidates) if c.is_dir()]
    names = [image_file_name(im) for im in data["images"][:5]]
    best = max(candidates, key=lambda c: sum(resolve_image(c, n).exists() for n in names), default=here)
    return best, setting


def load_coco(json_path: Path, cfg: DataConfig, split: Literal["train", "eval"], key: str = "data.path") -> LoadResult:
    data = read_instances(json_path, key)
    root, setting = image_dir(json_path, data, cfg, split)
    skipped: Counter[str] = Counter()
    checker = ImageChecker(skipped, setting)

    cats = {int(c["id"]): c for c in data["categories"]}
    by_name = {str(c["name"]): cid for cid, c in cats.items()}
    setting, wanted = cfg.categories_for(split)
    names = match_names(wanted, list(by_name), setting, str(json_path)) if wanted else list(by_name)
    images = {int(im["id"]): im for im in data["images"]}
    federated = any("neg_category_ids" in im for im in data["images"])

    boxes: dict[tuple[int, int], list[list[float]]] = defaultdict(list)  # (image, category) -> xyxy
    crowd: dict[tuple[int, int], list[list[float]]] = defaultdict(list)
    with_box: dict[int, set[int]] = defaultdict(set)  # category -> images with a non-crowd box
    touched: dict[int, set[int]] = defaultdict(set)  # category -> images with any annotation
    for ann in data["annotations"]:
        image_id, cid = int(ann["image_id"]), int(ann["category_id"])
        bbox = ann.get("bbox")
        if image_id not in images or bbox is None or len(bbox) != 4:
            continue
        touched[cid].add(image_id)
        if ann.get("iscrowd"):
            crowd[(image_id, cid)].append(xywh_to_xyxy(bbox))
        else:
            boxes[(image_id, cid)].append(xywh_to_xyxy(bbox))
            with_box[cid].add(image_id)

    def make(image_id: int, cid: int, positive: bool) -> Record | None:
        im = images[image_id]
        file_name = image_file_name(im)
        path = resolve_image(root, file_name)
        size = checker.size(path)
        if size is None:
            return None
        if im.get("width") and im.get("height") and (int(im["width"]), int(im["height"])) != size:
            # boxes would land in the wrong place (or an EXIF-rotated frame)
            checker.skip(SIZE_MISMATCH, str(path), f"json says {im['width']}x{im['height']}, the file is {size[0]}x{size[1]}")
            return None
        truth = clip_boxes(boxes.get((image_id, cid), []), size, skipped)
        if positive and not truth:
            checker.skip(NO_VALID_BOX, str(path), f"no {cats[cid]['name']} box inside the image")
            return None
        meta: dict[str, Any] = {"source": "coco", "image_id": image_id, "category_id": cid, "file_name": file_name}
        crowd_boxes = crowd.get((image_id, cid))
        if crowd_boxes:
            meta["crowd_boxes"] = clip_boxes(crowd_boxes, size, Counter())
        if federated:  # what LVIS' federated metric needs (tasks/lvis_eval.py)
            meta["federated"] = True
            if cats[cid].get("frequency"):
                meta["frequency"] = str(cats[cid]["frequency"])  # r / c / f: APr, APc, APf
            if cid in im.get("not_exhaustive_category_ids", ()):
                meta["not_exhaustive"] = True
        return Record(
            image=str(path),
            task="detect",
            solution=truth,
            fields={"category": label_name(str(cats[cid]["name"]))},
            image_size=size,
            meta=meta,
        )

    all_ids = sorted(images)
    records: list[Record] = []
    for name in names:
        cid = by_name[name]
        present = sorted(with_box[cid])
        if federated:
            absent = [i for i in all_ids if cid in images[i].get("neg_category_ids", ()) and i not in touched[cid]]
        else:
            absent = [i for i in all_ids if i not in touched[cid]]

        if split == "eval":
            eligible = sorted(set(present) | set(absent)) if federated else all_ids
            records.extend(r for i in eligible if (r := make(i, cid, positive=False)) is not None)
            continue

        if federated:
            usable_present = [i for i in present if cid not in images[i].get("not_exhaustive_category_ids", ())]
            skipped[NOT_EXHAUSTIVE] += len(present) - len(usable_present)
            present = usable_present
        order = seeded_order(present, cfg.seed, f"{name}:positive") if cfg.shots is not None else present
        records.extend(take_usable(order, cfg.shots, lambda i, cid=cid: make(i, cid, positive=True)))
        if cfg.negatives:
            order = seeded_order(absent, cfg.seed, f"{name}:negative")
            records.extend(take_usable(order, cfg.negatives, lambda i, cid=cid: make(i, cid, positive=False)))
    return LoadResult(records, skipped, checker.entries)
