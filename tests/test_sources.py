"""Every data source on small generated data, and every bad input of issue 2.

Fixtures are written here with Pillow (and pyarrow for the hub parquet/arrow layouts),
a few pixels per image so the whole file runs in about a second.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from visualrft_lite.config import DataConfig
from visualrft_lite.data import sources
from visualrft_lite.data.common import (
    BAD_SOLUTION,
    BOX_CLIPPED,
    BOX_DROPPED,
    CORRUPT_IMAGE,
    MISSING_IMAGE,
    NO_VALID_BOX,
    NOT_EXHAUSTIVE,
    SHORT_CLASS,
    SIZE_MISMATCH,
)
from visualrft_lite.data.sources import LoadResult, load_records
from visualrft_lite.errors import UserError


def png(path: Path, size=(8, 6), color=(200, 30, 30), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def png_bytes(size=(8, 6), color=(0, 0, 255, 255), mode="RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text, text
    return text


# ----------------------------------------------------------------------------- folder

CLASSES = {"british_shorthair": 5, "sphynx": 3, "abyssinian": 4}


def make_folder(root: Path, classes=CLASSES) -> Path:
    for c, (name, n) in enumerate(classes.items()):
        for i in range(n):
            png(root / name / f"{i:02d}.png", color=(c * 60, i * 20, 0))
    return root


def files_of(result: LoadResult) -> list[str]:
    return [Path(r.image).name for r in result.records]


def test_folder_labels_and_fields(tmp_path):
    root = make_folder(tmp_path / "pets")
    res = load_records(cfg(source="folder", path=str(root), kind="pet", attribute="species",
                           synonyms={"sphynx": ["sphinx cat"]}))
    assert len(res.records) == 12 and not res.skipped
    labels = Counter(r.solution["label"] for r in res.records)
    # Folder names become labels with underscores as spaces.
    assert labels == {"british shorthair": 5, "sphynx": 3, "abyssinian": 4}
    r = next(r for r in res.records if r.solution["label"] == "sphynx")
    assert r.solution["synonyms"] == ["sphinx cat"]
    assert r.fields == {"kind": "pet", "attribute": "species", "labels": ["abyssinian", "british shorthair", "sphynx"]}
    assert r.image_size == (8, 6) and r.task == "classify" and Path(r.image).is_file()


def test_folder_kshot_counts_and_determinism(tmp_path):
    root = make_folder(tmp_path / "pets")
    two = load_records(cfg(source="folder", path=str(root), shots=2, seed=0))
    # Two per class, and the same two on every load with the same seed.
    assert Counter(r.solution["label"] for r in two.records) == {"british shorthair": 2, "sphynx": 2, "abyssinian": 2}
    assert files_of(two) == files_of(load_records(cfg(source="folder", path=str(root), shots=2, seed=0)))
    # Another seed draws differently (a fixed fact for seeds 0 and 1 on these files).
    assert files_of(two) != files_of(load_records(cfg(source="folder", path=str(root), shots=2, seed=1)))
    # Asking for 4 gives sphynx its 3 and counts the short class.
    four = load_records(cfg(source="folder", path=str(root), shots=4))
    assert Counter(r.solution["label"] for r in four.records)["sphynx"] == 3
    assert four.skipped[SHORT_CLASS] == 1


def test_folder_kshot_of_one_class_is_independent_of_the_others(tmp_path):
    # Seeds are per (seed, class), so choosing a subset does not change a class's draw.
    root = make_folder(tmp_path / "pets")
    everything = load_records(cfg(source="folder", path=str(root), shots=2, seed=3))
    subset = load_records(cfg(source="folder", path=str(root), shots=2, seed=3, categories=["British Shorthair"]))
    assert files_of(subset) == [Path(r.image).name for r in everything.records if r.solution["label"] == "british shorthair"]
    assert subset.records[0].fields["labels"] == ["british shorthair"]


def test_folder_corrupt_image_is_skipped_and_kshot_still_filled(tmp_path):
    root = make_folder(tmp_path / "pets")
    for f in (root / "sphynx").iterdir():
        if f.name != "00.png":
            f.write_bytes(b"not a png")  # two of three sphynx images are broken
    res = load_records(cfg(source="folder", path=str(root), shots=1))
    assert res.skipped[CORRUPT_IMAGE] <= 2 and Counter(r.solution["label"] for r in res.records)["sphynx"] == 1
    full = load_records(cfg(source="folder", path=str(root)))
    assert full.skipped[CORRUPT_IMAGE] == 2 and len(full.records) == 10


def test_folder_train_test_splits(tmp_path):
    root = tmp_path / "flowers"
    make_folder(root / "train")
    make_folder(root / "test", {"british_shorthair": 1, "sphynx": 1, "abyssinian": 1})
    c = cfg(source="folder", path=str(root), shots=1)
    assert len(load_records(c, "train").records) == 3
    # The eval split takes every test image: shots are a training notion.
    ev = load_records(c, "eval")
    assert len(ev.records) == 3 and all("/test/" in r.image for r in ev.records)


# ----------------------------------------------------------------------------- coco


def make_coco(root: Path) -> Path:
    """Six 100x80 images; 'fire hydrant' on 1-3, 'stop_sign' (LVIS-style name) on 3-4, a crowd dog on 5."""
    images = []
    for i in range(1, 7):
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 100, "height": 80})
        if i != 6:  # image 6 is listed but its file is missing
            Image.new("RGB", (100, 80), (i * 30, 0, 0)).save(root / f"{i:012d}.jpg")
    anns = [
        # image 1: one box inside, one sticking out on the right (clipped to x2 = 100)
        {"id": 1, "image_id": 1, "category_id": 11, "bbox": [10, 10, 20, 20], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 11, "bbox": [90, 50, 30, 10], "iscrowd": 0},
        # image 2: one box, plus a zero-width one (dropped)
        {"id": 3, "image_id": 2, "category_id": 11, "bbox": [0, 0, 50, 40], "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 11, "bbox": [5, 5, 0, 10], "iscrowd": 0},
        # image 3: hydrant entirely outside the image (dropped: image 3 has no valid hydrant) + a stop sign
        {"id": 5, "image_id": 3, "category_id": 11, "bbox": [150, 10, 10, 10], "iscrowd": 0},
        {"id": 6, "image_id": 3, "category_id": 13, "bbox": [1, 2, 3, 4], "iscrowd": 0},
        {"id": 7, "image_id": 4, "category_id": 13, "bbox": [20, 20, 10, 10], "iscrowd": 0},
        # image 5: a crowd of dogs only (never a target)
        {"id": 8, "image_id": 5, "category_id": 18, "bbox": [0, 0, 100, 80], "iscrowd": 1},
        # image 6 (missing file): a hydrant
        {"id": 9, "image_id": 6, "category_id": 11, "bbox": [1, 1, 5, 5], "iscrowd": 0},
    ]
    cats = [{"id": 11, "name": "fire hydrant"}, {"id": 13, "name": "stop_sign"}, {"id": 18, "name": "dog"}]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def by_image(res: LoadResult, category: str) -> dict[int, list]:
    return {r.meta["image_id"]: r.solution for r in res.records if r.fields["category"] == category}


def test_coco_boxes_clipping_and_counts(tmp_path):
    path = make_coco(tmp_path)
    res = load_records(cfg(source="coco", path=str(path), task="detect", categories=["fire hydrant"]))
    hydrants = by_image(res, "fire hydrant")
    # [x, y, w, h] → [x1, y1, x2, y2]; the second box of image 1 is clipped at the right edge.
    assert hydrants[1] == [[10.0, 10.0, 30.0, 30.0], [90.0, 50.0, 100.0, 60.0]]
    assert hydrants[2] == [[0.0, 0.0, 50.0, 40.0]]
    # Image 3's only hydrant lies outside: dropped, so image 3 is no positive; image 6 is missing.
    assert set(hydrants) == {1, 2}
    assert res.skipped == Counter({BOX_CLIPPED: 1, BOX_DROPPED: 2, NO_VALID_BOX: 1, MISSING_IMAGE: 1})
    r = res.records[0]
    assert r.task == "detect" and r.image_size == (100, 80)
    assert r.meta == {"source": "coco", "image_id": 1, "category_id": 11, "file_name": "000000000001.jpg"}


def test_coco_category_names_match_loosely(tmp_path):
    path = make_coco(tmp_path)
    # Case and underscores do not matter ("Stop Sign" finds LVIS-style "stop_sign"); the prompt
    # gets the name with spaces.
    res = load_records(cfg(source="coco", path=str(path), task="detect", categories=["Stop Sign"]))
    assert sorted(by_image(res, "stop sign")) == [3, 4]


def test_coco_kshot_and_negatives(tmp_path):
    path = make_coco(tmp_path)
    c = cfg(source="coco", path=str(path), task="detect", categories=["fire hydrant", "stop_sign"], shots=1, negatives=2, seed=0)
    res = load_records(c)
    for name in ("fire hydrant", "stop sign"):
        recs = [r for r in res.records if r.fields["category"] == name]
        positives = [r for r in recs if r.solution]
        negatives = [r for r in recs if not r.solution]
        assert len(positives) == 1 and len(negatives) == 2
    # A negative never holds the category, and crowd-only image 5 is a fine negative for hydrants.
    hydrant_images = {1, 2, 3, 6}
    assert all(r.meta["image_id"] not in hydrant_images for r in res.records if r.fields["category"] == "fire hydrant" and not r.solution)
    again = load_records(c)
    assert [(r.meta["image_id"], r.fields["category"]) for r in again.records] == [(r.meta["image_id"], r.fields["category"]) for r in res.records]


def test_coco_crowd_is_never_a_target(tmp_path):
    path = make_coco(tmp_path)
    res = load_records(cfg(source="coco", path=str(path), task="detect", categories=["dog"], negatives=1))
    # No image has a non-crowd dog: no positives. Crowd-only image 5 is not a negative either.
    assert all(not r.solution and r.meta["image_id"] != 5 for r in res.records)
    ev = load_records(cfg(source="coco", path=str(path), eval_path=str(path), task="detect", categories=["dog"]), "eval")
    five = next(r for r in ev.records if r.meta["image_id"] == 5)
    assert five.solution == [] and five.meta["crowd_boxes"] == [[0.0, 0.0, 100.0, 80.0]]


def test_coco_eval_split_is_every_image_times_category(tmp_path):
    path = make_coco(tmp_path)
    c = cfg(source="coco", path=str(path), eval_path=str(path), task="detect", categories=["fire hydrant", "dog"], shots=1)
    ev = load_records(c, "eval")
    # 5 readable images x 2 categories, shots ignored; image 3 stays (empty truth: its box lies outside).
    assert len(ev.records) == 10
    assert by_image(ev, "fire hydrant")[3] == []


def test_open_vocabulary_evaluates_on_its_own_categories(tmp_path):
    # train on the base categories, evaluate on the novel ones (the paper's open-vocabulary split)
    path = make_coco(tmp_path)
    c = cfg(source="coco", path=str(path), eval_path=str(path), task="detect", categories=["fire hydrant"],
            eval_categories=["dog"])
    assert {r.fields["category"] for r in load_records(c, "train").records} == {"fire hydrant"}
    assert {r.fields["category"] for r in load_records(c, "eval").records} == {"dog"}
    with pytest.raises(UserError, match="data.eval_categories"):
        load_records(cfg(source="coco", path=str(path), eval_path=str(path), task="detect",
                         eval_categories=["unicorn"]), "eval")


def test_coco_size_mismatch_is_skipped(tmp_path):
    path = make_coco(tmp_path)
    Image.new("RGB", (50, 40)).save(tmp_path / "000000000001.jpg")  # JSON says 100x80
    res = load_records(cfg(source="coco", path=str(path), task="detect", categories=["fire hydrant"]))
    assert res.skipped[SIZE_MISMATCH] == 1 and 1 not in by_image(res, "fire hydrant")


def test_lvis_federated_negatives_and_coco_url(tmp_path):
    # LVIS: no file_name (coco_url instead); negatives only where verified absent
    # (neg_category_ids); positives not exhaustively annotated are not trained on.
    (tmp_path / "val2017").mkdir()
    images = []
    for i in range(1, 5):
        images.append({"id": i, "coco_url": f"http://images.cocodataset.org/val2017/{i:012d}.jpg", "width": 10, "height": 10,
                       "neg_category_ids": [7] if i in (3,) else [], "not_exhaustive_category_ids": [7] if i == 2 else []})
        Image.new("RGB", (10, 10)).save(tmp_path / "val2017" / f"{i:012d}.jpg")
    anns = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2]},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [1, 1, 2, 2]}]
    path = tmp_path / "lvis_v1_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 7, "name": "horse_buggy"}]}))
    c = cfg(source="coco", path=str(path), image_root=str(tmp_path), task="detect", categories=["horse buggy"], negatives=5)
    res = load_records(c)
    assert {(r.meta["image_id"], bool(r.solution)) for r in res.records} == {(1, True), (3, False)}
    assert res.skipped[NOT_EXHAUSTIVE] == 1
    assert res.records[0].meta["file_name"] == "val2017/000000000001.jpg"
    # Eval: image 4 (neither annotated nor verified absent) is not evaluated for the category.
    ev = load_records(dataclasses.replace(c, eval_path=str(path)), "eval")
    assert sorted(r.meta["image_id"] for r in ev.records) == [1, 2, 3]


# ----------------------------------------------------------------------------- jsonl


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_records(tmp_path):
    png(tmp_path / "imgs" / "a.png", size=(200, 100))
    png(tmp_path / "imgs" / "b.png", size=(200, 100))
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"image": "imgs/a.png", "task": "detect", "category": "dog", "solution": [[10, 10, 50, 50], [190, 90, 250, 120]]},
        # Visual-RFT's string form: 0-1000 boxes, converted to pixels of the 200x100 image.
        {"image": "imgs/a.png", "task": "ground", "query": "the dog", "solution": "<answer>(100,100),(500,500)</answer>"},
        {"image": "imgs/b.png", "task": "classify", "solution": "tabby cat", "labels": ["tabby cat", "lynx"]},
        {"image": "imgs/b.png", "task": "count", "query": "How many?", "solution": 3},
        {"image": "imgs/b.png", "task": "choice", "query": "Which?", "options": ["x", "y"], "solution": "(B)"},
        "",  # blank lines are fine
        {"image": "imgs/missing.png", "task": "count", "solution": 1},
        {"image": "imgs/a.png", "task": "ground", "query": "off-image", "solution": [300, 10, 400, 20]},
    ])
    res = load_records(cfg(source="jsonl", path=str(path), synonyms={"tabby cat": ["tabby"]}))
    det, ground, cls, count, choice = res.records
    assert det.solution == [[10.0, 10.0, 50.0, 50.0], [190.0, 90.0, 200.0, 100.0]] and det.fields == {"category": "dog"}
    assert ground.solution == [20.0, 10.0, 100.0, 50.0]
    assert cls.solution == {"label": "tabby cat", "synonyms": ["tabby"]} and cls.fields["labels"] == ["tabby cat", "lynx"]
    assert (count.solution, choice.solution) == (3, "B")
    assert det.meta["line"] == 1 and det.image_size == (200, 100)
    assert res.skipped == Counter({MISSING_IMAGE: 1, BOX_CLIPPED: 1, BOX_DROPPED: 1})


def test_jsonl_image_root(tmp_path):
    # Image paths resolve against data.image_root when set (not the jsonl's own folder).
    png(tmp_path / "pics" / "a.png")
    path = write_jsonl(tmp_path / "x.jsonl", [{"image": "a.png", "task": "count", "solution": 2}])
    assert len(load_records(cfg(source="jsonl", path=str(path), image_root=str(tmp_path / "pics"))).records) == 1
    assert load_records(cfg(source="jsonl", path=str(path))).skipped == Counter({MISSING_IMAGE: 1})


JSONL_ERRORS = [
    # Broken JSON: the user needs the line to fix.
    ('{"image": "a.png", "solution": ', ":1: not valid JSON"),
    # A JSON value that is not an object.
    ('["a.png", 3]', ":1: each line must be a JSON object"),
    # No solution.
    ({"image": "a.png", "task": "count"}, ":1: missing 'solution'"),
    # A task the rewards do not know.
    ({"image": "a.png", "task": "segment", "solution": 1}, ":1: unknown task 'segment'"),
    # A typo in a key is caught, not silently ignored.
    ({"image": "a.png", "task": "count", "solution": 1, "qeury": "x"}, ":1: unknown key 'qeury'"),
    # A detection box that is not four numbers.
    ({"image": "a.png", "task": "detect", "solution": [[1, 2, 3]]}, ":1: detect solution"),
]


@pytest.mark.parametrize("row,needle", JSONL_ERRORS, ids=[n for _, n in JSONL_ERRORS])
def test_jsonl_malformed_lines_name_file_and_line(tmp_path, row, needle):
    png(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(UserError) as e:
        load_records(cfg(source="jsonl", path=str(path)))
    assert f"{path}{needle}" in one_line(e)


# ----------------------------------------------------------------------------- hub

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # the hub extra is optional; only these tests need it
    pa = pq = None
needs_pyarrow = pytest.mark.skipif(pa is None, reason="pyarrow not installed (pip install 'vrft-lite[hub]'): hub parquet/arrow readers untested")


DETECT_PROBLEM = (
    "Detect all objects belonging to the category 'bus' in the image, and provide the bounding boxes "
    "(between 0 and 1000, integer) and confidence (between 0 and 1, with two decimal places).\n..."
)


def hub_rows() -> list[dict]:
    img = {"bytes": png_bytes(size=(200, 100)), "path": "x.png"}
    return [
        # A positive: 0-1000 boxes → pixels of the 200x100 image; the second pokes past 1000 (clipped).
        {"image": img, "problem": DETECT_PROBLEM,
         "solution": "<answer>[{'Position': [100, 0, 500, 500], 'Confidence': 1}, {'Position': [900, 900, 1100, 1000], 'Confidence': 1}]</answer>"},
        # A negative.
        {"image": img, "problem": DETECT_PROBLEM, "solution": "<answer>No Objects</answer>"},
        # Broken image bytes: skipped as corrupt.
        {"image": {"bytes": b"\x89PNG broken", "path": None}, "problem": DETECT_PROBLEM, "solution": "<answer>No Objects</answer>"},
        # A solution that is not a box list: skipped and counted.
        {"image": img, "problem": DETECT_PROBLEM, "solution": "<answer>a bus</answer>"},
    ]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def check_hub_detect(res: LoadResult) -> None:
    pos, neg = res.records
    assert pos.prompt == DETECT_PROBLEM  # verbatim
    assert pos.fields == {"category": "bus"}  # recovered for presence prompts
    assert pos.solution == [[20.0, 0.0, 100.0, 50.0], [180.0, 90.0, 200.0, 100.0]]
    assert neg.solution == [] and isinstance(pos.image, bytes) and pos.image_size == (200, 100)
    assert res.skipped == Counter({CORRUPT_IMAGE: 1, BAD_SOLUTION: 1, BOX_CLIPPED: 1})


@needs_pyarrow
def test_hub_parquet_file(tmp_path):
    path = write_parquet(tmp_path / "train.parquet", hub_rows())
    check_hub_detect(load_records(cfg(source="hub", path=str(path), task="detect")))


@needs_pyarrow
def test_hub_parquet_folder_splits(tmp_path):
    # The hub's layout: data/train-00000-of-00001.parquet and data/test-....
    write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", hub_rows())
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", hub_rows()[:1])
    c = cfg(source="hub", path=str(tmp_path), task="detect")
    check_hub_detect(load_records(c))
    assert len(load_records(c, "eval").records) == 1


@needs_pyarrow
def test_hub_save_to_disk_folder(tmp_path):
    # What DatasetDict.save_to_disk writes: dataset_dict.json + <split>/state.json + Arrow stream files.
    (tmp_path / "train").mkdir()
    (tmp_path / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    (tmp_path / "train" / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    table = pa.Table.from_pylist(hub_rows())
    with pa.OSFile(str(tmp_path / "train" / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    check_hub_detect(load_records(cfg(source="hub", path=str(tmp_path), task="detect")))


@needs_pyarrow
def test_hub_classification_rgba_and_kshot(tmp_path):
    # The released sets store RGBA images; labels keep their underscores (the reward normalises).
    rows = [{"image": {"bytes": png_bytes(color=(0, 0, 0, 0)), "path": None}, "problem": "Q", "solution": f"<answer>{lab}</answer>"}
            for lab in ["british_shorthair"] * 3 + ["sphynx"] * 2]
    path = write_parquet(tmp_path / "cls.parquet", rows)
    res = load_records(cfg(source="hub", path=str(path), task="classify", shots=1, kind="pet", attribute="species"))
    assert sorted(r.solution["label"] for r in res.records) == ["british_shorthair", "sphynx"]
    assert res.records[0].prompt == "Q" and res.records[0].fields == {"kind": "pet", "attribute": "species"}


@needs_pyarrow
def test_hub_missing_column(tmp_path):
    path = write_parquet(tmp_path / "x.parquet", [{"image": b"", "question": "q", "solution": "s"}])
    with pytest.raises(UserError) as e:
        load_records(cfg(source="hub", path=str(path), task="detect"))
    assert "lacks column 'problem'" in one_line(e)


def test_hub_id_without_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(UserError) as e:
        load_records(cfg(source="hub", path="laolao77/ViRFT_COCO_8_cate_4_shot", task="detect"))
    assert "pip install 'vrft-lite[hub]'" in one_line(e)


# ----------------------------------------------------------------------------- entry point and bad input

MISSING_PATHS = [
    # Each source names the key to fix and the path it looked at.
    (dict(source="folder", path="/no/such/flowers"), "train", "/no/such/flowers", "data.path"),
    (dict(source="coco", path="/no/such/instances.json", task="detect"), "train", "/no/such/instances.json", "data.path"),
    (dict(source="jsonl", path="/no/such/mine.jsonl"), "train", "/no/such/mine.jsonl", "data.path"),
    (dict(source="hub", path="/no/such/data.parquet"), "train", "/no/such/data.parquet", "data.path"),
    # The eval split looks at data.eval_path and says so.
    (dict(source="coco", path="/x.json", eval_path="/no/such/val.json", task="detect"), "eval", "/no/such/val.json", "data.eval_path"),
    # An empty path is named as empty, not as "'' not found".
    (dict(source="folder", path=""), "train", "is empty", "data.path"),
]


@pytest.mark.parametrize("kw,split,needle,key", MISSING_PATHS, ids=[f"{k['source']}-{s}-{n}" for k, s, n, _ in MISSING_PATHS])
def test_missing_dataset_path(kw, split, needle, key):
    with pytest.raises(UserError) as e:
        load_records(cfg(**kw), split)
    text = one_line(e)
    assert needle in text and key in text


def test_unknown_category_lists_near_matches(tmp_path):
    path = make_coco(tmp_path)
    with pytest.raises(UserError) as e:
        load_records(cfg(source="coco", path=str(path), task="detect", categories=["fire hydrnt"]))
    assert "unknown category 'fire hydrnt'" in one_line(e) and "did you mean 'fire hydrant'" in str(e.value)
    root = make_folder(tmp_path / "pets")
    with pytest.raises(UserError) as e:
        load_records(cfg(source="folder", path=str(root), categories=["sphinx"]))
    assert "did you mean 'sphynx'" in one_line(e) and "data.categories" in str(e.value)


OTHER_BAD_INPUT = [
    # COCO json that is not JSON: file and line.
    ("coco not json", lambda p: (p / "a.json").write_text("{\n  oops") and dict(source="coco", path=str(p / "a.json"), task="detect"),
     "malformed COCO json"),
    # JSON without COCO's lists.
    ("coco wrong shape", lambda p: (p / "a.json").write_text("{}") and dict(source="coco", path=str(p / "a.json"), task="detect"),
     "needs 'images', 'annotations' and 'categories'"),
    # A folder without class folders.
    ("folder flat", lambda p: png(p / "flat" / "a.png") and dict(source="folder", path=str(p / "flat")), "no class sub-folders"),
    # Eval on a folder without a test split and no eval_path.
    ("folder no test", lambda p: make_folder(p / "f") and dict(source="folder", path=str(p / "f")), "set data.eval_path"),
]


@pytest.mark.parametrize("case,make,needle", OTHER_BAD_INPUT, ids=[c[0] for c in OTHER_BAD_INPUT])
def test_other_bad_input_is_one_line(tmp_path, case, make, needle):
    kw = make(tmp_path)
    split = "eval" if case == "folder no test" else "train"
    with pytest.raises(UserError) as e:
        load_records(cfg(**kw), split)
    assert needle in one_line(e)


def test_unusual_colour_modes_load_through_a_source(tmp_path):
    # CMYK, RGBA, palette and 16-bit gray files are kept (not skipped) and probe to their size.
    root = tmp_path / "modes"
    png(root / "a" / "rgba.png", mode="RGBA", color=(1, 2, 3, 4))
    Image.new("CMYK", (8, 6), (0, 255, 0, 0)).save(root / "a" / "cmyk.jpg")
    png(root / "a" / "p.png", mode="P", color=3)
    Image.new("I;16", (8, 6)).save(root / "a" / "g16.png")
    png(root / "b" / "rgb.png")  # a second class: a single class folder is refused
    res = load_records(cfg(source="folder", path=str(root)))
    assert len(res.records) == 5 and not res.skipped
    assert {r.image_size for r in res.records} == {(8, 6)}


def test_limit_keeps_a_seeded_subset_across_classes(tmp_path):
    root = make_folder(tmp_path / "pets")
    res = load_records(cfg(source="folder", path=str(root), limit=6, seed=0))
    assert len(res.records) == 6 and len({r.solution["label"] for r in res.records}) > 1
    assert files_of(res) == files_of(load_records(cfg(source="folder", path=str(root), limit=6, seed=0)))


def test_data_prompt_template_is_rendered_into_records(tmp_path):
    root = make_folder(tmp_path / "pets")
    res = load_records(cfg(source="folder", path=str(root), shots=1, kind="pet", prompt="classify_labels"))
    assert "Choose one of: abyssinian, british shorthair, sphynx." in res.records[0].prompt
    with pytest.raises(UserError) as e:
        load_records(cfg(source="folder", path=str(root), shots=1, prompt="{query}?"))
    assert "'query'" in one_line(e)


def test_synthetic_every_task_from_the_cache(tmp_path, monkeypatch):
    # The real generator, into $VRFT_LITE_HOME; each task goes through its source's loader.
    monkeypatch.setenv("VRFT_LITE_HOME", str(tmp_path / "home"))
    c = cfg(source="synthetic", task="classify", seed=5, shots=2)
    assert sources.synthetic_root(c) == tmp_path / "home" / "data" / "shapes-5"
    cls = load_records(c)
    assert Counter(r.solution["label"] for r in cls.records) == {"circle": 2, "square": 2, "star": 2, "triangle": 2}
    for task in ("detect", "ground", "count"):
        for split in ("train", "eval"):
            res = load_records(dataclasses.replace(c, task=task, categories=None, shots=None), split)
            assert res.records and not res.skipped and {r.task for r in res.records} == {task}, (task, split)
    det = load_records(dataclasses.replace(c, task="detect", categories=["circle"], shots=2, negatives=1))
    assert [bool(r.solution) for r in det.records] == [True, True, False]


def test_synthetic_refuses_a_foreign_folder(tmp_path):
    png(tmp_path / "mine" / "photo.png")
    with pytest.raises(UserError) as e:
        load_records(cfg(source="synthetic", path=str(tmp_path / "mine")))
    assert "not a synthetic shapes dataset" in one_line(e)
