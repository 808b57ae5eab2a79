"""The paper's datasets as their owners publish them, on small faithful replicas.

Each replica keeps the released file names, folder nesting and annotation formats (MATLAB
files through scipy.io, labelme JSON, COCO/LVIS JSON, hub parquet) with a few tiny images,
so each preset is checked with its defaults and only `data.path` set, as a user would run it.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualrft_lite.config import load_config
from visualrft_lite.data.common import CORRUPT_IMAGE, MISSING_IMAGE, SHORT_CLASS
from visualrft_lite.data import official
from visualrft_lite.data.official import flowers_classes
from visualrft_lite.data.skips import readable_records, skipped_lines, write_skipped
from visualrft_lite.data.sources import load_records
from visualrft_lite.errors import UserError

scipy_io = pytest.importorskip("scipy.io")
real_downloader = official.downloader


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The presets download a missing dataset: here any attempt the test did not arrange fails."""
    def refuse(source):
        raise AssertionError(f"a test tried to download {source}")

    monkeypatch.setattr(official, "downloader", refuse)


def jpg(path: Path, size=(12, 8), color=(90, 120, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")
    return path


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text, text
    return text


def data_cfg(preset: str, *overrides: str):
    return load_config(preset, list(overrides)).data


def labels(result) -> Counter:
    return Counter(r.solution["label"] for r in result.records)


# ----------------------------------------------------------------------------- Flowers102


def make_flowers(root: Path, per_split: int = 2, classes: int = 3) -> Path:
    """root/flowers-102/ as torchvision and the release leave it: jpg/image_%05d.jpg, imagelabels.mat
    (key labels, shape (1, N), 1-based), setid.mat (trnid / valid / tstid, 1-based image ids)."""
    base = root / "flowers-102"
    labels_, sets = [], {"trnid": [], "valid": [], "tstid": []}
    image_id = 0
    for c in range(1, classes + 1):
        for key in ("trnid", "valid", "tstid"):
            for _ in range(per_split):
                image_id += 1
                labels_.append(c)
                sets[key].append(image_id)
                jpg(base / "jpg" / f"image_{image_id:05d}.jpg", color=(c * 60, image_id * 5, 0))
    scipy_io.savemat(base / "imagelabels.mat", {"labels": np.array([labels_], dtype=np.uint8)})
    scipy_io.savemat(base / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in sets.items()})
    return base


def test_flowers_official_layout_names_and_splits(tmp_path, caplog):
    make_flowers(tmp_path / "data")
    cfg = data_cfg("flowers-1shot", f"data.path={tmp_path / 'data'}")
    with caplog.at_level(logging.WARNING):
        train = load_records(cfg, "train")
    # torchvision's names for class ids 1..3, one image each (1-shot), drawn from trnid + valid only.
    assert labels(train) == {"pink primrose": 1, "hard-leaved pocket orchid": 1, "canterbury bells": 1}
    assert {int(Path(r.image).stem[-5:]) % 6 for r in train.records} <= {1, 2, 3, 4}  # ids 1-4 of each 6 are train/val
    assert train.records[0].fields["labels"] == flowers_classes()[:3]
    # The replica's .mat files differ from the release's: a warning, not a refusal.
    assert "differs from the official release" in caplog.text
    ev = load_records(cfg, "eval")
    # Eval: every tstid image (ids 5, 6 of each class), no shots.
    assert len(ev.records) == 6 and {int(Path(r.image).stem[-5:]) % 6 for r in ev.records} == {5, 0}


def test_flowers_path_may_name_the_dataset_folder_and_kshot_uses_train_plus_val(tmp_path):
    base = make_flowers(tmp_path / "data")
    four = load_records(data_cfg("flowers-4shot", f"data.path={base}"), "train")
    # 2 trnid + 2 valid per class: 4 shots fit exactly.
    assert labels(four) == {"pink primrose": 4, "hard-leaved pocket orchid": 4, "canterbury bells": 4}
    eight = load_records(data_cfg("flowers-8shot", f"data.path={base}"), "train")
    assert eight.skipped[SHORT_CLASS] == 3 and len(eight.records) == 12


def test_flowers_official_layout_under_folder_source_is_recognised(tmp_path):
    # The trap: source=folder on the release trained a one-class "jpg" classifier.
    make_flowers(tmp_path / "data")
    res = load_records(data_cfg("demo", "data.source=folder", f"data.path={tmp_path / 'data' / 'flowers-102'}"), "train")
    assert "jpg" not in labels(res) and len(labels(res)) == 3


def test_flowers_download_goes_through_the_downloader(tmp_path, monkeypatch):
    # No network here: torchvision's downloader is replaced by one that writes the replica,
    # which checks the root it is given and that the files are then read.
    calls = []

    class FakeFlowers:
        def __init__(self, root, download=False, **_):
            calls.append((Path(root), download))
            make_flowers(Path(root))

    monkeypatch.setattr(official, "downloader", lambda source: FakeFlowers)
    target = tmp_path / "fresh"
    res = load_records(data_cfg("flowers-1shot", f"data.path={target}"), "train")
    assert calls == [(target, True)] and len(res.records) == 3
    # Pointing at the folder the download creates downloads into its parent.
    calls.clear()
    load_records(data_cfg("flowers-1shot", f"data.path={tmp_path / 'other' / 'flowers-102'}"), "train")
    assert calls == [(tmp_path / "other", True)]


@pytest.mark.slow  # imports torchvision, hence torch
@pytest.mark.parametrize("source", ["flowers102", "oxford_pets", "fgvc_aircraft", "stanford_cars"])
def test_downloaders_are_torchvisions(source):
    # The real classes behind `downloader`, each taking (root, download=...); Flowers102's names
    # parsed from torchvision's source are the ones its class holds.
    cls = real_downloader(source)
    assert cls.__module__.startswith("torchvision.datasets") and "download" in cls.__init__.__code__.co_varnames
    if source == "flowers102":
        assert flowers_classes() == list(cls.classes) and len(cls.classes) == 102


def test_missing_official_dataset_without_download_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        load_records(data_cfg("flowers-1shot", f"data.path={tmp_path / 'none'}", "data.download=false"), "train")
    text = one_line(e)
    assert "Flowers102 not found" in text and "imagelabels.mat" in text and "data.download=true" in text


# ----------------------------------------------------------------------------- Oxford-IIIT Pets


def make_pets(root: Path) -> Path:
    """oxford-iiit-pet/images/<Breed>_<n>.jpg and annotations/{trainval,test}.txt: 'name class species breed'."""
    base = root / "oxford-iiit-pet"
    rows = {"trainval": [], "test": []}
    for cls, (breed, species) in enumerate([("Abyssinian", 1), ("american_bulldog", 2)], 1):
        for n in range(1, 6):
            name = f"{breed}_{n}"
            jpg(base / "images" / f"{name}.jpg", color=(cls * 80, n * 30, 0))
            rows["trainval" if n <= 3 else "test"].append(f"{name} {cls} {species} {cls}")
    (base / "annotations").mkdir(parents=True)
    for split, lines in rows.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return base


def test_pets_official_names_and_splits(tmp_path):
    make_pets(tmp_path)
    cfg = data_cfg("pets-2shot", f"data.path={tmp_path}")
    train = load_records(cfg, "train")
    # torchvision's naming: words of the file name, title-cased.
    assert labels(train) == {"Abyssinian": 2, "American Bulldog": 2}
    assert all(int(Path(r.image).stem.rsplit("_", 1)[1]) <= 3 for r in train.records)
    ev = load_records(cfg, "eval")
    assert sorted(Path(r.image).name for r in ev.records) == [
        "Abyssinian_4.jpg", "Abyssinian_5.jpg", "american_bulldog_4.jpg", "american_bulldog_5.jpg"]


# ----------------------------------------------------------------------------- FGVC-Aircraft


def make_aircraft(root: Path) -> Path:
    base = root / "fgvc-aircraft-2013b"
    data = base / "data"
    variants = ["707-320", "A300B4", "F-16A/B"]
    split_rows = {"train": [], "val": [], "trainval": [], "test": []}
    n = 1000000
    for v in variants:
        for split in ("train", "val", "test", "test"):
            n += 1
            jpg(data / "images" / f"{n}.jpg")
            split_rows[split].append(f"{n} {v}")
            if split in ("train", "val"):
                split_rows["trainval"].append(f"{n} {v}")
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    for split, rows in split_rows.items():
        (data / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")
    return base


def test_aircraft_official_variants_and_splits(tmp_path):
    make_aircraft(tmp_path / "data")
    cfg = data_cfg("aircraft-1shot", f"data.path={tmp_path / 'data'}")
    train = load_records(cfg, "train")
    # Variant names with spaces and slashes survive ("F-16A/B"); k-shot from trainval (2 per variant).
    assert labels(train) == {"707-320": 1, "A300B4": 1, "F-16A/B": 1}
    two = load_records(data_cfg("aircraft-2shot", f"data.path={tmp_path / 'data'}"), "train")
    assert not two.skipped and len(two.records) == 6
    assert labels(load_records(cfg, "eval")) == {"707-320": 2, "A300B4": 2, "F-16A/B": 2}


# ----------------------------------------------------------------------------- Stanford Cars


def _annos(rows: list[tuple[str, int]]) -> np.ndarray:
    dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    return np.array([(1, 1, 5, 5, cls, fname) for fname, cls in rows], dtype=dtype)


def make_cars(root: Path) -> Path:
    """stanford_cars/ as torchvision reads it: devkit/cars_meta.mat (class_names), devkit/cars_train_annos.mat,
    cars_test_annos_withlabels.mat (struct arrays: fname, class 1-based), cars_train/, cars_test/."""
    base = root / "stanford_cars"
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)
    (base / "devkit").mkdir(parents=True)
    scipy_io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names.reshape(1, -1)})
    train = [(f"{i:05d}.jpg", 1 + i % 2) for i in range(1, 7)]
    test = [(f"{i:05d}.jpg", 1 + i % 2) for i in range(1, 5)]
    for fname, _ in train:
        jpg(base / "cars_train" / fname)
    for fname, _ in test:
        jpg(base / "cars_test" / fname)
    scipy_io.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": _annos(train)})
    scipy_io.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": _annos(test)})
    return base


def test_cars_official_names_and_splits(tmp_path):
    make_cars(tmp_path)
    cfg = data_cfg("cars-2shot", f"data.path={tmp_path}")
    assert labels(load_records(cfg, "train")) == {"AM General Hummer SUV 2000": 2, "Acura RL Sedan 2012": 2}
    ev = load_records(cfg, "eval")
    assert len(ev.records) == 4 and all("/cars_test/" in r.image for r in ev.records)


def test_cars_cannot_be_downloaded_says_so_in_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        load_records(data_cfg("cars-1shot", f"data.path={tmp_path / 'missing'}"), "train")
    text = one_line(e)
    assert "no longer be downloaded" in text and "devkit/cars_meta.mat" in text


def test_source_disagreeing_with_the_data_is_refused(tmp_path):
    base = make_pets(tmp_path)
    with pytest.raises(UserError) as e:
        load_records(data_cfg("flowers-1shot", f"data.path={base}"), "train")
    assert "holds Oxford-IIIT Pets" in one_line(e) and "data.source=oxford_pets" in str(e.value)


def test_one_parent_folder_holds_every_dataset(tmp_path, monkeypatch):
    # The presets' default data.path is the shared parent (data/): each preset finds its own dataset
    # there, and one that is missing is downloaded into it rather than confused with a sibling.
    make_flowers(tmp_path)
    make_pets(tmp_path)
    assert labels(load_records(data_cfg("pets-1shot", f"data.path={tmp_path}"), "train")) == {"Abyssinian": 1, "American Bulldog": 1}
    assert len(load_records(data_cfg("flowers-1shot", f"data.path={tmp_path}"), "train").records) == 3
    fetched = []
    monkeypatch.setattr(official, "downloader", lambda source: lambda root, download: fetched.append(source) or make_aircraft(Path(root)))
    assert len(load_records(data_cfg("aircraft-1shot", f"data.path={tmp_path}"), "train").records) == 3
    assert fetched == ["fgvc_aircraft"]


# ----------------------------------------------------------------------------- class-folder re-packs


def make_repack(root: Path, names: dict[str, str] | None = {"1": "pink primrose", "3": "canterbury bells"}) -> Path:
    """The widely used Flowers102 re-pack: train/ and valid/ of numbered folders, plus cat_to_name.json."""
    for split, n in (("train", 3), ("valid", 1)):
        for folder in ("1", "3"):
            for i in range(n):
                jpg(root / split / folder / f"image_{folder}{i}.jpg")
    if names is not None:
        (root / "cat_to_name.json").write_text(json.dumps(names))
    return root


def test_repack_with_valid_split_and_name_map(tmp_path):
    root = make_repack(tmp_path / "flower_data")
    # The flowers preset (official source) on a re-pack reads it as class folders.
    cfg = data_cfg("flowers-2shot", f"data.path={root}")
    assert labels(load_records(cfg, "train")) == {"pink primrose": 2, "canterbury bells": 2}
    ev = load_records(cfg, "eval")
    assert labels(ev) == {"pink primrose": 1, "canterbury bells": 1} and all("/valid/" in r.image for r in ev.records)


def test_repack_with_label_names_setting(tmp_path):
    root = make_repack(tmp_path / "flower_data", names=None)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"1": "daisy", "3": "rose"}))
    res = load_records(data_cfg("demo", "data.source=folder", f"data.path={root}", f"data.label_names={names}"), "train")
    assert labels(res) == {"daisy": 3, "rose": 3}


REFUSALS = [
    # Numbered folders and no map: the labels would be "1", "3".
    ("digits", lambda p: make_repack(p / "d", names=None), "are numbers", "cat_to_name.json"),
    # One class folder: a one-class classifier is never what was meant.
    ("single", lambda p: jpg(p / "s" / "jpg" / "image_00001.jpg").parent.parent, "single class folder", "'jpg'"),
    # Split folders where classes belong (valid/ is flat here, so train/ + valid/ are not splits).
    ("splits", lambda p: (jpg(p / "x" / "train" / "a" / "1.jpg"), jpg(p / "x" / "valid" / "2.jpg"))[0].parents[2],
     "split folders (train, valid)", "data.path"),
    # A map that misses a folder.
    ("short map", lambda p: make_repack(p / "m", names={"1": "daisy"}), "'3' of", "cat_to_name.json"),
]


@pytest.mark.parametrize("case,make,needle,fix", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_ambiguous_class_folders_are_refused_in_one_line(tmp_path, case, make, needle, fix):
    root = make(tmp_path)
    with pytest.raises(UserError) as e:
        load_records(data_cfg("demo", "data.source=folder", f"data.path={root}"), "train")
    text = one_line(e)
    assert needle in text and fix in text


# ----------------------------------------------------------------------------- COCO and LVIS

COCO_8 = ["bus", "train", "fire hydrant", "stop sign", "cat", "dog", "bed", "toilet"]


def write_coco_split(root: Path, split: str, ids: range, cats: list[dict], boxes: dict[int, tuple[int, list]]) -> None:
    images = []
    for i in ids:
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 40, "height": 30})
        jpg(root / f"{split}2017" / f"{i:012d}.jpg", size=(40, 30))
    anns = [{"id": k, "image_id": i, "category_id": cid, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}
            for k, (i, (cid, bbox)) in enumerate(boxes.items(), 1)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))


def make_coco(root: Path) -> Path:
    """coco/annotations/instances_{train,val}2017.json, train2017/, val2017/ (images in different folders)."""
    cats = [{"id": k, "name": n, "supercategory": "x"} for k, n in enumerate(COCO_8, 1)]
    write_coco_split(root, "train", range(1, 7), cats, {1: (1, [1, 1, 10, 10]), 2: (1, [2, 2, 10, 10]), 3: (5, [0, 0, 20, 20])})
    write_coco_split(root, "val", range(101, 104), cats, {101: (1, [5, 5, 10, 10])})
    return root


def test_coco_as_downloaded_trains_and_evaluates_with_the_preset(tmp_path):
    root = make_coco(tmp_path / "coco")
    for path in (root, root / "annotations" / "instances_train2017.json"):  # the folder or the train json
        cfg = data_cfg("coco-8cat-2shot", f"data.path={path}")
        train = load_records(cfg, "train")
        assert {r.meta["image_id"] for r in train.records if r.solution} == {1, 2, 3} and not train.files
        ev = load_records(cfg, "eval")
        # 3 val images x 8 categories, images from val2017/ (the issue: they were looked for in train2017/).
        assert len(ev.records) == 24 and all("/val2017/" in r.image for r in ev.records) and not ev.files


def test_coco_train_image_root_gives_the_eval_json_its_sibling(tmp_path):
    # An explicit data.image_root naming train2017/ (the old presets' setting) still evaluates on val2017/.
    root = make_coco(tmp_path / "coco")
    cfg = data_cfg("coco-8cat-2shot", f"data.path={root / 'annotations' / 'instances_train2017.json'}",
                   f"data.image_root={root / 'train2017'}")
    assert all("/val2017/" in r.image for r in load_records(cfg, "eval").records)


def test_coco_missing_image_names_the_path_and_the_setting(tmp_path):
    root = make_coco(tmp_path / "coco")
    (root / "val2017" / "000000000102.jpg").unlink()
    res = load_records(data_cfg("coco-8cat-2shot", f"data.path={root}"), "eval")
    [entry] = res.files
    assert entry.path == str(root / "val2017" / "000000000102.jpg") and entry.reason == MISSING_IMAGE
    assert entry.detail == "data.eval_image_root" and entry.stage == "eval"
    assert str(root / "val2017" / "000000000102.jpg") in res.summary() and "data.eval_image_root" in res.summary()


def test_lvis_as_downloaded(tmp_path):
    # lvis/lvis_v1_{train,val}.json (coco_url, no file_name; val draws from train2017/ too), images in coco/.
    cats = [{"id": 1, "name": "horse_buggy", "synonyms": ["horse_buggy"], "frequency": "r"}]
    folders = {1: "train2017", 2: "train2017", 3: "val2017", 4: "train2017"}  # LVIS val image 4 is a COCO train image
    for split, ids in (("train", (1, 2)), ("val", (3, 4))):
        images = []
        for i in ids:
            folder = folders[i]
            jpg(tmp_path / "coco" / folder / f"{i:012d}.jpg", size=(40, 30))
            images.append({"id": i, "coco_url": f"http://images.cocodataset.org/{folder}/{i:012d}.jpg", "width": 40,
                           "height": 30, "neg_category_ids": [], "not_exhaustive_category_ids": []})
        anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25} for i in ids]
        (tmp_path / "lvis").mkdir(exist_ok=True)
        (tmp_path / "lvis" / f"lvis_v1_{split}.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                                             "categories": cats}))
    cfg = data_cfg("lvis-rare6-10shot", f"data.path={tmp_path / 'lvis' / 'lvis_v1_train.json'}", "data.categories=[horse_buggy]")
    assert len(load_records(cfg, "train").records) == 2
    ev = load_records(cfg, "eval")
    assert sorted(Path(r.image).parent.name for r in ev.records) == ["train2017", "val2017"] and not ev.files


# ----------------------------------------------------------------------------- ReasonSeg (LISA)


def labelme(text: list[str], shapes: list[tuple[str, list]]) -> dict:
    return {"text": text, "is_sentence": True,
            "shapes": [{"label": label, "points": pts, "shape_type": "polygon", "group_id": None, "flags": {}}
                       for label, pts in shapes]}


def make_reasonseg(root: Path) -> Path:
    base = root / "ReasonSeg"
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        for i in range(n):
            stem = f"{split}_{i}"
            jpg(base / split / f"{stem}.jpg", size=(100, 80))
            shapes = [("target", [[10, 10], [30, 12], [20, 40]]), ("target", [[50, 50], [60, 55], [55, 70]]),
                      ("ignore", [[0, 0], [99, 0], [99, 79]]), ("flag", [[0, 0], [5, 5], [0, 5]])]
            (base / split / f"{stem}.json").write_text(json.dumps(labelme([f"what holds water? {i}", "the cups"], shapes)))
    return base


def test_reasonseg_as_released(tmp_path):
    base = make_reasonseg(tmp_path)
    cfg = data_cfg("lisa-grounding", f"data.path={base}")
    train = load_records(cfg, "train")
    # One record per instruction (2 images x 2); the box bounds the target polygons only.
    assert len(train.records) == 4 and {r.task for r in train.records} == {"ground"}
    assert {tuple(r.solution) for r in train.records} == {(10.0, 10.0, 60.0, 70.0)}
    assert train.records[0].fields == {"query": "what holds water? 0"}
    ev = load_records(cfg, "eval")
    assert len(ev.records) == 2 and all("/test/" in r.image for r in ev.records)


def test_visual_rft_lisa_train_json_array(tmp_path):
    base = make_reasonseg(tmp_path)
    # Visual-RFT's converted file: absolute paths from its author's machine, boxes in pixels.
    rows = [{"image_path": f"/home/someone/LISA/train/train_{i}.jpg", "instruction": ["the cups", "where to drink"],
             "boxes": [[10.0, 10.0, 30.0, 40.0]]} for i in range(2)]
    path = base / "lisa_train.json"
    path.write_text(json.dumps(rows, indent=4))
    cfg = data_cfg("lisa-grounding", f"data.path={path}")
    res = load_records(cfg, "train")
    assert len(res.records) == 4 and res.records[0].solution == [10.0, 10.0, 30.0, 40.0] and not res.files
    assert res.records[1].fields["query"] == "where to drink"
    with pytest.raises(UserError) as e:
        load_records(cfg, "eval")
    assert "data.eval_path" in one_line(e)
    ev = load_records(data_cfg("lisa-grounding", f"data.path={path}", f"data.eval_path={base}"), "eval")
    assert len(ev.records) == 2


# ----------------------------------------------------------------------------- hub folders

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # the hub extra is optional; only the hub tests need it
    pa = pq = None
needs_pyarrow = pytest.mark.skipif(pa is None, reason="pyarrow not installed (pip install 'vrft-lite[hub]')")


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (8, 6), (0, 0, 255, 255)).save(buf, format="PNG")
    return buf.getvalue()


def write_hub(folder: Path) -> Path:
    rows = [{"image": {"bytes": png_bytes(), "path": None}, "problem": "Q", "solution": f"<answer>{lab}</answer>"}
            for lab in ["pink_primrose"] * 4 + ["daisy"] * 4]
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "train-00000-of-00001.parquet")
    return folder


@needs_pyarrow
def test_hub_parquet_folder_is_detected_whatever_the_source(tmp_path):
    # `--local-dir` download: data/train-00000-of-00001.parquet. The flowers preset names the
    # official source; the folder's contents win (before: "class with fewer images than shots").
    write_hub(tmp_path / "ViRFT_CLS_flower_4_shot" / "data")
    cfg = data_cfg("flowers-4shot", f"data.path={tmp_path / 'ViRFT_CLS_flower_4_shot'}")
    res = load_records(cfg, "train")
    assert labels(res) == {"pink_primrose": 4, "daisy": 4} and not res.skipped
    with pytest.raises(UserError) as e:
        load_records(cfg, "eval")
    assert "--set data.eval_path=" in one_line(e) and "train-only" in str(e.value)


@needs_pyarrow
def test_hub_eval_on_the_official_test_split(tmp_path):
    write_hub(tmp_path / "hub" / "data")
    make_flowers(tmp_path / "data")
    cfg = data_cfg("flowers-4shot", "data.source=hub", f"data.path={tmp_path / 'hub'}", f"data.eval_path={tmp_path / 'data'}")
    assert len(load_records(cfg, "eval").records) == 6


@needs_pyarrow
def test_hub_cache_folder(tmp_path):
    cache = tmp_path / "datasets--laolao77--ViRFT_CLS_flower_4_shot"
    write_hub(cache / "snapshots" / "abc123" / "data")
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("abc123")
    res = load_records(data_cfg("flowers-4shot", "data.source=hub", f"data.path={cache}"), "train")
    assert len(res.records) == 8


# ----------------------------------------------------------------------------- skipped files, named


def test_skipped_files_are_named_written_and_printed(tmp_path):
    base = make_flowers(tmp_path / "data")
    (base / "jpg" / "image_00005.jpg").write_bytes(b"not a jpeg")  # a test image of class 1
    (base / "jpg" / "image_00006.jpg").unlink()
    res = load_records(data_cfg("flowers-1shot", f"data.path={base}"), "eval")
    assert len(res.records) == 4
    assert {(Path(e.path).name, e.reason, e.stage) for e in res.files} == {
        ("image_00005.jpg", CORRUPT_IMAGE, "eval"), ("image_00006.jpg", MISSING_IMAGE, "eval")}
    out = tmp_path / "skipped.jsonl"
    assert write_skipped(out, res.files) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["reason"] for r in rows} == {CORRUPT_IMAGE, MISSING_IMAGE} and set(rows[0]) == {"path", "reason", "stage", "detail"}
    lines = skipped_lines(res.files, first=1)
    assert lines[0] == "skipped 2 files: 1 corrupt image, 1 missing image" and lines[-1].endswith("1 more in skipped.jsonl")


def test_readable_records_drops_an_image_that_fails_to_decode(tmp_path):
    # A truncated JPEG passes the cheap probe at load time but cannot be decoded: eval must
    # report it and leave it out of both sides of the metric, not score it as a miss.
    base = make_flowers(tmp_path / "data")
    buf = io.BytesIO()
    Image.effect_noise((64, 48), 50).convert("RGB").save(buf, "JPEG")
    (base / "jpg" / "image_00005.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    res = load_records(data_cfg("flowers-1shot", f"data.path={base}"), "eval")
    assert len(res.records) == 6 and not res.files  # the probe lets it through
    kept, late = readable_records(res.records, stage="eval")
    assert len(kept) == 5 and [(Path(s.path).name, s.reason, s.stage) for s in late] == [("image_00005.jpg", CORRUPT_IMAGE, "eval")]
