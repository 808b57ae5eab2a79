"""LVIS' federated box AP: hand-derived cases, then the official LVIS API on a small replica."""

from __future__ import annotations

import copy
import logging
import random
import warnings

import numpy as np
import pytest

from visualrft_lite.data.records import Record
from visualrft_lite.tasks.lvis_eval import lvis_eval, lvis_map

GT_BOX = [10.0, 10.0, 100.0, 100.0]  # x, y, w, h: area 10,000, "large"


def dataset(images, annotations, categories=None):
    """LVIS-style ground truth; images as (id, neg_category_ids, not_exhaustive_category_ids)."""
    return {
        "images": [{"id": i, "neg_category_ids": neg, "not_exhaustive_category_ids": ne} for i, neg, ne in images],
        "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": box, "area": box[2] * box[3]}
                        for k, (i, c, box) in enumerate(annotations)],
        "categories": categories or [{"id": 1, "name": "die", "frequency": "r"}],
    }


def ap(gt, detections, **kw):
    return lvis_eval(gt, detections, **kw).metrics()["mAP"]


def test_one_box_one_perfect_detection_is_ap_1():
    # IoU 1 at every threshold: a true positive, precision 1 at all 101 recall points
    gt = dataset([(1, [], [])], [(1, 1, GT_BOX)])
    assert ap(gt, [(1, 1, GT_BOX, 0.9)]) == pytest.approx(1.0)


def test_a_partial_overlap_counts_at_the_thresholds_it_reaches():
    # det [10, 10, 100, 72] inside the box: IoU 7200 / 10000 = 0.72, a match at .50 .55 .60 .65 .70
    # and a miss at .75 ... .95, so AP = 5 / 10 thresholds = 0.5; AP50 = 1, AP75 = 0
    gt = dataset([(1, [], [])], [(1, 1, GT_BOX)])
    m = lvis_eval(gt, [(1, 1, [10.0, 10.0, 100.0, 72.0], 0.9)]).metrics()
    assert (m["mAP"], m["AP50"], m["AP75"]) == pytest.approx((0.5, 1.0, 0.0))


def test_a_false_positive_on_a_negative_image_ranked_first_halves_ap():
    # image 2 lists the category as absent, so a detection there is a false positive. Ranked
    # first: tp = [0, 1], fp = [1, 1], precision [0, 0.5] -> monotone [0.5, 0.5]; every recall
    # point reads 0.5, so AP = 0.5
    gt = dataset([(1, [], []), (2, [1], [])], [(1, 1, GT_BOX)])
    assert ap(gt, [(1, 1, GT_BOX, 0.9), (2, 1, GT_BOX, 0.95)]) == pytest.approx(0.5)


def test_a_false_positive_between_two_hits_costs_the_upper_half_of_recall():
    # two boxes; order hit (0.9), miss on the negative image (0.8), hit (0.7):
    # recall [.5, .5, 1], precision [1, .5, 2/3] -> monotone [1, 2/3, 2/3]; the 51 recall
    # points 0.00 ... 0.50 read 1, the 50 above read 2/3: AP = (51 + 50 * 2/3) / 101
    gt = dataset([(1, [], []), (2, [1], []), (3, [], [])], [(1, 1, GT_BOX), (3, 1, GT_BOX)])
    dets = [(1, 1, GT_BOX, 0.9), (2, 1, GT_BOX, 0.8), (3, 1, GT_BOX, 0.7)]
    assert ap(gt, dets) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_a_low_scored_false_positive_after_full_recall_costs_nothing():
    # the hit comes first: precision [1, 0.5] -> monotone [1, 0.5] but recall is already 1
    # at the first detection, so every recall point reads 1
    gt = dataset([(1, [], []), (2, [1], [])], [(1, 1, GT_BOX)])
    assert ap(gt, [(1, 1, GT_BOX, 0.9), (2, 1, GT_BOX, 0.5)]) == pytest.approx(1.0)


def test_an_unmatched_detection_on_a_not_exhaustive_image_is_ignored():
    # image 1 has a box but is not exhaustively annotated: the miss there (0.95, ranked
    # first) is neither true nor false positive, so AP stays 1.0 (it would be 0.5 otherwise,
    # as in the negative-image case above)
    gt = dataset([(1, [], [1])], [(1, 1, GT_BOX)])
    miss = (1, 1, [150.0, 150.0, 30.0, 30.0], 0.95)
    assert ap(gt, [(1, 1, GT_BOX, 0.9), miss]) == pytest.approx(1.0)
    exhaustive = dataset([(1, [], [])], [(1, 1, GT_BOX)])
    assert ap(exhaustive, [(1, 1, GT_BOX, 0.9), miss]) == pytest.approx(0.5)


def test_a_detection_on_an_unverified_image_is_not_counted_at_all():
    # image 2 neither has the category nor lists it as absent: the detection is dropped
    # before scoring (AP 1.0, one detection scored); listing it as absent makes it count (0.5)
    gt = dataset([(1, [], []), (2, [], [])], [(1, 1, GT_BOX)])
    dets = [(1, 1, GT_BOX, 0.9), (2, 1, GT_BOX, 0.95)]
    result = lvis_eval(gt, dets)
    assert result.metrics()["mAP"] == pytest.approx(1.0)
    assert (result.n_detections, result.n_scored) == (2, 1)
    negative = dataset([(1, [], []), (2, [1], [])], [(1, 1, GT_BOX)])
    assert ap(negative, dets) == pytest.approx(0.5)


def test_300_detections_per_image_across_categories_then_the_rest_is_dropped():
    # 300 detections of category 2 score 0.5 on image 1, the perfect category-1 hit scores
    # 0.1: the cap keeps the top 300, so the hit is gone and category 1 scores 0, even when
    # only category 1 is evaluated; with the cap lifted it scores 1
    cats = [{"id": 1, "name": "die", "frequency": "r"}, {"id": 2, "name": "omelet", "frequency": "r"}]
    gt = dataset([(1, [], [])], [(1, 1, GT_BOX)], cats)
    crowd = [(1, 2, [0.0, 0.0, 5.0, 5.0], 0.5)] * 300
    dets = [*crowd, (1, 1, GT_BOX, 0.1)]
    assert ap(gt, dets, category_ids=[1]) == pytest.approx(0.0)
    assert ap(gt, dets, category_ids=[1], max_dets=301) == pytest.approx(1.0)


def test_mean_over_categories_with_ground_truth_and_by_frequency():
    # die (rare): perfect, AP 1; omelet (common): the negative-image miss first, AP 0.5 (as
    # above); papaya (frequent) has no box anywhere: AP None, left out of every mean.
    # mAP = (1 + 0.5) / 2; APr = 1, APc = 0.5, APf None
    cats = [{"id": 1, "name": "die", "frequency": "r"}, {"id": 2, "name": "omelet", "frequency": "c"},
            {"id": 3, "name": "papaya", "frequency": "f"}]
    gt = dataset([(1, [], []), (2, [2, 3], [])], [(1, 1, GT_BOX), (1, 2, GT_BOX)], cats)
    dets = [(1, 1, GT_BOX, 0.9), (1, 2, GT_BOX, 0.9), (2, 2, GT_BOX, 0.95), (2, 3, GT_BOX, 0.9)]
    m = lvis_eval(gt, dets).metrics()
    assert m["per_category"]["die"]["AP"] == pytest.approx(1.0)
    assert m["per_category"]["omelet"]["AP"] == pytest.approx(0.5)
    assert m["per_category"]["papaya"]["AP"] is None
    assert (m["mAP"], m["APr"], m["APc"], m["APf"]) == pytest.approx((0.75, 1.0, 0.5, None))


def test_area_ranges_follow_the_ground_truth_area():
    # a 20x20 box (400 < 32² = 1024) is small: APs 1; no medium or large box: None
    gt = dataset([(1, [], [])], [(1, 1, [0.0, 0.0, 20.0, 20.0])])
    m = lvis_eval(gt, [(1, 1, [0.0, 0.0, 20.0, 20.0], 0.9)]).metrics()
    assert (m["APs"], m["APm"], m["APl"]) == pytest.approx((1.0, None, None))


def test_records_become_verified_pairs_and_only_not_exhaustive_misses_are_forgiven():
    # two images, one category: image 7 has the box and is not exhaustive, image 8 is a
    # verified negative (a record with no box). The miss on image 7 ranked first is ignored
    # under LVIS (AP 1.0); coco_map, which knows nothing of not-exhaustive lists, counts it
    # as a false positive (0.5, as in the negative-image case)
    from visualrft_lite.tasks.coco_eval import coco_map

    box = [10.0, 10.0, 110.0, 110.0]  # x1, y1, x2, y2 = GT_BOX
    records = [
        Record("a.jpg", "detect", [box], {"category": "die"}, image_size=(200, 200),
               meta={"image_id": 7, "not_exhaustive": True, "frequency": "r"}),
        Record("b.jpg", "detect", [], {"category": "die"}, image_size=(200, 200), meta={"image_id": 8}),
    ]
    detections = [[(box, 0.9), ([150.0, 150.0, 180.0, 180.0], 0.95)], []]
    lvis = lvis_map(records, detections)
    assert lvis["mAP"] == pytest.approx(1.0)
    assert lvis["per_category"]["die"]["frequency"] == "r" and lvis["APr"] == pytest.approx(1.0)
    assert coco_map(records, detections)["mAP"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- the official API


def replica() -> tuple[dict, list]:
    """Five images, three categories (r / c / f), with every federated case, crowd-free.

    image 1: die x2 (one small), omelet; image 2: die, not exhaustive for die; omelet negative
    image 3: die and omelet negative, papaya; image 4: unverified for all three
    image 5: a small die box (900 px², listed first) inside a medium one (1,200 px²) and one
    detection on both: at area "medium" it must match the medium box (IoU 930/1200) and not
    the better-overlapping small box (IoU 900/930) the range ignores
    """
    cats = [{"id": 1, "name": "die", "frequency": "r"}, {"id": 2, "name": "omelet", "frequency": "c"},
            {"id": 3, "name": "papaya", "frequency": "f"}]
    images = [(1, [3], []), (2, [2], [1]), (3, [1, 2], []), (4, [], []), (5, [], [])]
    annotations = [(1, 1, [10.0, 10.0, 80.0, 60.0]), (1, 1, [120.0, 30.0, 20.0, 25.0]), (1, 2, [40.0, 90.0, 100.0, 90.0]),
                   (2, 1, [5.0, 5.0, 150.0, 140.0]), (3, 3, [60.0, 60.0, 45.0, 50.0]),
                   (5, 1, [0.0, 0.0, 30.0, 30.0]), (5, 1, [0.0, 0.0, 30.0, 40.0])]
    dets = [
        (1, 1, [12.0, 8.0, 78.0, 64.0], 0.9), (1, 1, [118.0, 33.0, 24.0, 20.0], 0.6), (1, 1, [150.0, 150.0, 30.0, 30.0], 0.7),
        (1, 2, [45.0, 95.0, 90.0, 80.0], 0.8), (1, 3, [0.0, 0.0, 50.0, 50.0], 0.3),  # papaya: negative on image 1
        (2, 1, [10.0, 10.0, 140.0, 130.0], 0.5), (2, 1, [160.0, 160.0, 20.0, 20.0], 0.95),  # miss: not exhaustive
        (2, 2, [20.0, 20.0, 60.0, 60.0], 0.9),  # omelet: negative on image 2
        (3, 1, [60.0, 60.0, 45.0, 50.0], 0.6), (3, 3, [58.0, 62.0, 47.0, 46.0], 0.7), (3, 3, [0.0, 0.0, 10.0, 10.0], 0.7),
        (4, 1, [0.0, 0.0, 100.0, 100.0], 0.99), (4, 2, [0.0, 0.0, 100.0, 100.0], 0.99),  # unverified: dropped
        (5, 1, [0.0, 0.0, 30.0, 31.0], 0.8),
    ]
    return dataset(images, annotations, cats), dets


def official(gt: dict, dets: list, monkeypatch: pytest.MonkeyPatch):
    import lvis  # the `lvis` extra, part of `dev`: the cross-check always runs
    monkeypatch.setattr(np, "float", float, raising=False)  # lvis 0.5.3 still spells NumPy's removed alias
    ground_truth = lvis.LVIS.__new__(lvis.LVIS)  # LVIS() reads a file; fill its index from the dict instead
    ground_truth.logger = logging.getLogger("lvis")
    ground_truth.dataset = copy.deepcopy(gt)
    ground_truth._create_index()
    results = [{"image_id": i, "category_id": c, "bbox": list(b), "score": s} for i, c, b, s in dets]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluation = lvis.LVISEval(ground_truth, lvis.LVISResults(ground_truth, results, max_dets=300), "bbox")
        evaluation.run()
    return evaluation


SUMMARY = {"AP": "mAP", "AP50": "AP50", "AP75": "AP75", "APs": "APs", "APm": "APm", "APl": "APl",
           "APr": "APr", "APc": "APc", "APf": "APf", "AR@300": "AR@300"}


def assert_same_as_official(gt, dets, monkeypatch):
    theirs = official(gt, dets, monkeypatch)
    ours = lvis_eval(gt, dets)
    np.testing.assert_allclose(ours.precision, theirs.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.recall, theirs.eval["recall"], rtol=0, atol=1e-12)
    metrics = ours.metrics()
    for key, mine in SUMMARY.items():
        expected = theirs.results[key]
        assert (metrics[mine] is None) if expected == -1 else metrics[mine] == pytest.approx(expected, abs=1e-12), key
    return metrics


def test_the_replica_matches_the_official_lvis_api(monkeypatch):
    metrics = assert_same_as_official(*replica(), monkeypatch)
    # not a degenerate case: the three categories score differently and none perfectly
    aps = [metrics["per_category"][n]["AP"] for n in ("die", "omelet", "papaya")]
    assert len(set(aps)) == 3 and all(0 < v < 1 for v in aps)


def test_seeded_random_replicas_match_the_official_lvis_api(monkeypatch):
    # many small federated sets with tied scores (one decimal) and a 300-detection pile-up
    rng = random.Random(0)
    cats = [{"id": c, "name": f"c{c}", "frequency": "rcf"[c % 3]} for c in (1, 2, 3)]
    for _ in range(8):
        images, annotations, dets = [], [], []
        for i in range(1, 6):
            positive = set(rng.sample([1, 2, 3], rng.randint(0, 2)))
            negative = [c for c in (1, 2, 3) if c not in positive and rng.random() < 0.5]
            images.append((i, negative, [c for c in positive if rng.random() < 0.4]))
            for c in positive:
                for _ in range(rng.randint(1, 3)):
                    box = [rng.uniform(0, 150), rng.uniform(0, 150), rng.uniform(5, 120), rng.uniform(5, 120)]
                    annotations.append((i, c, box))
                    if rng.random() < 0.8:
                        dets.append((i, c, [v + rng.uniform(-8, 8) for v in box[:2]] + [v + rng.uniform(-8, 8) for v in box[2:]],
                                     round(rng.random(), 1)))
        for _ in range(rng.choice([10, 320])):
            box = [rng.uniform(0, 150), rng.uniform(0, 150), rng.uniform(5, 60), rng.uniform(5, 60)]
            dets.append((rng.randint(1, 5), rng.randint(1, 3), box, round(rng.random(), 1)))
        assert_same_as_official(dataset(images, annotations, cats), dets, monkeypatch)
