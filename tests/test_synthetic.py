"""The synthetic shapes dataset: layout, determinism, COCO validity, tight boxes, negatives."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualrft_lite.data.synthetic import COLOURS, MARKER, PLURALS, SHAPES, make_shapes

SIZE = 112


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def saturation(path: Path) -> np.ndarray:
    """max - min over RGB per pixel: high on the shapes, low on the desaturated background."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return rgb.max(axis=2) - rgb.min(axis=2)  # [H, W]


def test_layout_and_counts(shapes_root):
    for split, per_class in (("train", 16), ("test", 8)):
        classes = sorted(p.name for p in (shapes_root / "classify" / split).iterdir())
        assert classes == sorted(SHAPES)
        for c in classes:
            files = list((shapes_root / "classify" / split / c).glob("*.png"))
            assert len(files) == per_class
        # detection / grounding / counting: as many images as classification has in all
        n = per_class * len(SHAPES)
        assert len(json.loads((shapes_root / "detect" / f"{split}.json").read_text())["images"]) == n
        assert len(read_jsonl(shapes_root / "ground" / f"{split}.jsonl")) == n
        assert len(read_jsonl(shapes_root / "count" / f"{split}.jsonl")) == n
    img = Image.open(next((shapes_root / "classify" / "train" / "circle").glob("*.png")))
    assert img.size == (SIZE, SIZE) and img.mode == "RGB"
    assert json.loads((shapes_root / MARKER).read_text())["seed"] == 0


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    small = dict(image_size=64, train_per_class=2, test_per_class=1)
    a = tree_digest(make_shapes(tmp_path / "a", seed=3, **small))
    b = tree_digest(make_shapes(tmp_path / "b", seed=3, **small))
    c = tree_digest(make_shapes(tmp_path / "c", seed=4, **small))
    assert a == b
    assert a.keys() == c.keys()  # same layout...
    pngs = [k for k in a if k.endswith(".png")]
    assert all(a[k] != c[k] for k in pngs)  # ...but every image differs


def test_second_call_reuses_and_other_parameters_rebuild(tmp_path):
    root = make_shapes(tmp_path / "s", image_size=64, train_per_class=1, test_per_class=1)
    probe = root / "classify" / "train" / "circle" / "circle_0000.png"
    before = probe.stat().st_mtime_ns
    make_shapes(root, image_size=64, train_per_class=1, test_per_class=1)
    assert probe.stat().st_mtime_ns == before  # reused, not rewritten
    make_shapes(root, image_size=64, train_per_class=2, test_per_class=1)  # other parameters: rebuilt
    assert len(list((root / "classify" / "train" / "circle").glob("*.png"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_refuses_to_overwrite_a_folder_that_is_not_a_shapes_dataset(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a shapes dataset"):
        make_shapes(tmp_path / "mine", image_size=64, train_per_class=1, test_per_class=1)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        make_shapes(tmp_path / "x", image_size=20)
    with pytest.raises(ValueError, match="at least 1"):
        make_shapes(tmp_path / "x", train_per_class=0)


@pytest.mark.parametrize("split", ["train", "test"])
def test_coco_json_loads_with_pycocotools_and_has_negatives(shapes_root, split):
    from pycocotools.coco import COCO

    coco = COCO(str(shapes_root / "detect" / f"{split}.json"))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == sorted(SHAPES)
    all_images = set(coco.getImgIds())
    for cat_id in coco.getCatIds():
        with_cat = set(coco.getImgIds(catIds=[cat_id]))
        assert with_cat, "every category has positives"
        assert all_images - with_cat, "every category has negatives (images without it)"
    per_image = [len(coco.getAnnIds(imgIds=[i])) for i in all_images]
    assert min(per_image) >= 1 and max(per_image) <= 4
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.loadImgs([ann["image_id"]])[0]
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= img["width"] and y + h <= img["height"]
        assert ann["area"] == w * h and ann["iscrowd"] == 0


def test_detection_boxes_are_tight_and_cover_every_shape(shapes_root):
    # Each box's outermost rows and columns hold shape pixels (tight), and no shape pixel lies
    # outside all boxes (complete). Shape colours have RGB spread >= 90 before noise; the
    # background is desaturated (spread <= ~40), hence the threshold 70.
    doc = json.loads((shapes_root / "detect" / "train.json").read_text())
    boxes: dict[int, list[list[int]]] = {}
    for ann in doc["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    for img in doc["images"][:24]:
        shape_px = saturation(shapes_root / "detect" / img["file_name"]) > 70  # [H, W]
        covered = np.zeros_like(shape_px)
        for x, y, w, h in boxes[img["id"]]:
            inside = shape_px[y:y + h, x:x + w]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y:y + h, x:x + w] = True
        assert not (shape_px & ~covered).any()


def test_ground_records_name_a_unique_shape_with_its_box(shapes_root):
    rows = read_jsonl(shapes_root / "ground" / "train.jsonl")
    for row in rows:
        assert row["task"] == "ground"
        colour, shape = row["query"].removeprefix("the ").split()
        assert colour in COLOURS and shape in SHAPES
        x1, y1, x2, y2 = row["solution"]
        assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE
        image = shapes_root / "ground" / row["image"]  # relative to the jsonl's folder
        assert image.is_file()
        assert (saturation(image)[y1:y2, x1:x2] > 70).mean() > 0.3  # the box holds a shape
    assert len({r["query"] for r in rows}) > 10  # varied targets


def test_count_records(shapes_root):
    rows = read_jsonl(shapes_root / "count" / "train.jsonl")
    for row in rows:
        assert row["task"] == "count" and isinstance(row["solution"], int) and 0 <= row["solution"] <= 6
        assert row["query"] in {f"How many {PLURALS[s]} are in the image?" for s in SHAPES}
        assert (shapes_root / "count" / row["image"]).is_file()
    assert len({r["solution"] for r in rows}) >= 3  # not a constant answer
