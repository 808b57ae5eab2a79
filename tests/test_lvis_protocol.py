"""LVIS data is scored with LVIS' federated protocol, COCO data with pycocotools: the reader
carries what the metric needs, the detection task picks the metric, eval's table names it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from visualrft_lite.config import load_config
from visualrft_lite.data.sources import load_records
from visualrft_lite.evaluate import metrics_table, score_completions

SIZE = (200, 150)
CATS = [{"id": 1, "name": "die", "synonyms": ["die"], "frequency": "r"},
        {"id": 2, "name": "omelet", "synonyms": ["omelet"], "frequency": "c"},
        {"id": 3, "name": "papaya", "synonyms": ["papaya"], "frequency": "f"}]


def make_lvis(root: Path) -> Path:
    """lvis/lvis_v1_{train,val}.json as published (coco_url, federated lists), images in coco/.

    val image 1: a die box, not exhaustive for die, omelet verified absent
    val image 2: an omelet box, die verified absent
    val image 3: nothing verified (so no record at all); papaya is verified nowhere
    """
    def image(i: int, folder: str, neg: list[int], ne: list[int]) -> dict:
        path = root / "coco" / folder / f"{i:012d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", SIZE, (40 * i, 90, 30)).save(path, "JPEG")
        return {"id": i, "coco_url": f"http://images.cocodataset.org/{folder}/{i:012d}.jpg", "width": SIZE[0],
                "height": SIZE[1], "neg_category_ids": neg, "not_exhaustive_category_ids": ne}

    def ann(k: int, i: int, c: int, box: list[float]) -> dict:
        return {"id": k, "image_id": i, "category_id": c, "bbox": box, "area": box[2] * box[3]}

    (root / "lvis").mkdir(parents=True)
    train = {"images": [image(10, "train2017", [], [])], "annotations": [ann(1, 10, 1, [5, 5, 30, 30])],
             "categories": CATS}
    val = {"images": [image(1, "val2017", [2], [1]), image(2, "train2017", [1], []), image(3, "val2017", [], [])],
           "annotations": [ann(1, 1, 1, [10, 10, 40, 40]), ann(2, 2, 2, [20, 20, 100, 100])], "categories": CATS}
    (root / "lvis" / "lvis_v1_train.json").write_text(json.dumps(train))
    (root / "lvis" / "lvis_v1_val.json").write_text(json.dumps(val))
    return root / "lvis" / "lvis_v1_train.json"


def eval_records(train_json: Path):
    cfg = load_config("lvis-rare6-10shot", [f"data.path={train_json}", "data.categories=[die, omelet, papaya]"])
    return load_records(cfg.data, "eval").records


def answer(boxes: list[tuple[list[float], float]]) -> str:
    """Pixel boxes as a Qwen2-VL answer: 0-1000 of the 200 x 150 image (exact: x * 5, y * 20 / 3)."""
    w, h = SIZE
    items = [f"{{'Position': [{x1 * 1000 / w!r}, {y1 * 1000 / h!r}, {x2 * 1000 / w!r}, {y2 * 1000 / h!r}], "
             f"'Confidence': {c}}}" for (x1, y1, x2, y2), c in boxes]
    return "<think>.</think><answer>" + ("[" + ", ".join(items) + "]" if items else "No Objects") + "</answer>"


def completions(recs) -> list[str]:
    # (1, die): the box (0.9) and a miss elsewhere ranked first (0.95); (2, omelet): a box of IoU
    # 100 x 72 / 10,000 = 0.72 (a match at .50 ... .70 only); the verified negatives: "No Objects"
    by_pair = {(1, "die"): [([10.0, 10.0, 50.0, 50.0], 0.9), ([150.0, 100.0, 190.0, 140.0], 0.95)],
               (2, "omelet"): [([20.0, 20.0, 120.0, 92.0], 0.8)]}
    return [answer(by_pair.get((r.meta["image_id"], r.fields["category"]), [])) for r in recs]


def test_the_lvis_reader_keeps_only_verified_pairs_with_what_the_metric_needs(tmp_path):
    recs = eval_records(make_lvis(tmp_path))
    pairs = sorted((r.meta["image_id"], r.fields["category"]) for r in recs)
    # image 3 and papaya are verified nowhere: 4 records, not 3 images x 3 categories
    assert pairs == [(1, "die"), (1, "omelet"), (2, "die"), (2, "omelet")]
    meta = {(r.meta["image_id"], r.fields["category"]): r.meta for r in recs}
    assert all(m["federated"] for m in meta.values())
    assert (meta[1, "die"]["frequency"], meta[2, "omelet"]["frequency"]) == ("r", "c")
    assert meta[1, "die"].get("not_exhaustive") is True and "not_exhaustive" not in meta[2, "omelet"]


def test_lvis_records_are_scored_federated_and_coco_records_with_pycocotools(tmp_path):
    recs = eval_records(make_lvis(tmp_path))
    m = score_completions(recs, completions(recs)).metrics
    # LVIS: the miss on image 1 is forgiven (not exhaustive for die): die AP 1.0; omelet's 0.72 box
    # matches at 5 of the 10 thresholds: AP 0.5. mAP (1 + 0.5) / 2; APr = die, APc = omelet, no APf
    assert m["ap_protocol"] == "lvis"
    assert (m["per_category"]["die"]["AP"], m["per_category"]["omelet"]["AP"]) == pytest.approx((1.0, 0.5))
    assert (m["mAP"], m["APr"], m["APc"], m["APf"]) == pytest.approx((0.75, 1.0, 0.5, None))
    # the same records without the federated mark: COCO counts the miss, ranked first, as a false
    # positive (precision 0 then 1/2, made monotone 1/2 at every recall point): die AP 0.5
    coco = [dataclasses.replace(r, meta={k: v for k, v in r.meta.items() if k != "federated"}) for r in recs]
    c = score_completions(coco, completions(coco)).metrics
    assert c["ap_protocol"] == "coco" and "APr" not in c
    assert (c["per_category"]["die"]["AP"], c["mAP"]) == pytest.approx((0.5, 0.5))


def test_the_table_names_the_protocol_and_the_frequency_groups_it_spans(tmp_path):
    recs = eval_records(make_lvis(tmp_path))
    table = metrics_table(score_completions(recs, completions(recs)).metrics).splitlines()
    assert "LVIS federated AP (verified categories only, 300 detections per image)" in table
    assert f"{'APr (rare categories)':<30}{100.0:6.1f}" in table
    assert f"{'APc (common categories)':<30}{50.0:6.1f}" in table
    assert not any(line.startswith("APf") for line in table)  # no frequent category has ground truth here
    coco = [dataclasses.replace(r, meta={}) for r in recs]
    assert "COCO AP (pycocotools, 100 detections per image)" in metrics_table(
        score_completions(coco, completions(recs)).metrics).splitlines()
