"""LVIS' federated box AP, computed the way the official LVIS API computes it (LVISEval, "bbox").

LVIS is annotated per (image, category), so an image only says something about the
categories its labels verify:

    verified      a category is judged on an image only when the image has a box of it or
                  lists it in `neg_category_ids`; detections of any other category on that
                  image are dropped before scoring (neither true nor false positives)
    not exhaustive  on an image whose `not_exhaustive_category_ids` lists the category, a
                  detection that matches no box is ignored (the missing box may be there)
    300 per image at most, across all categories, the highest scores first
                  (LVISResults(max_dets=300)), before anything else is decided

and then as COCO: IoU thresholds .50:.05:.95, greedy matching in score order to the best
unmatched box, precision at 101 recall points made monotone, area ranges all / small
(< 32²) / medium / large (> 96²) by the ground truth's `area` and the detection's w·h.
A category's AP is the mean over thresholds and recall points at area "all"; the mean AP
is over the evaluated categories that have ground truth (the paper averages the preset's
categories); APr / APc / APf group the categories by their `frequency`.

    lvis_eval(gt, detections)   LVIS-style dicts in, `LvisResult` (precision / recall arrays) out
    lvis_map(records, detections)  vrft-lite's detection records in, `coco_map`'s keys out

Inputs are vrft-lite's own terms, not files: ground truth {"images": [{"id",
"neg_category_ids", "not_exhaustive_category_ids"}], "annotations": [{"id", "image_id",
"category_id", "bbox": [x, y, w, h], "area"?}], "categories": [{"id", "name", "frequency"?}]}
(no crowd: LVIS has none) and detections (image_id, category_id, [x, y, w, h], score).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# np.linspace, not arange: the same float thresholds as the official Params (0.75 is exact)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e5**2), ("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e5**2))
FREQUENCIES = ("r", "c", "f")  # rare (< 10 training images), common (< 100), frequent
MAX_DETS = 300

Detection = tuple[int, int, Sequence[float], float]
"""(image_id, category_id, [x, y, w, h] in pixels, score)."""


@dataclass
class LvisResult:
    """What `lvis_eval` computes; `metrics()` turns it into metrics.json's detection keys."""

    category_ids: list[int]  # evaluated, in the order of the K axis
    names: list[str]
    frequencies: list[str | None]
    n_gt: list[int]  # boxes per category that count at area "all"
    precision: np.ndarray  # [T thresholds, R recall points, K categories, A areas]; -1: no ground truth there
    recall: np.ndarray  # [T, K, A]; -1: no ground truth there
    n_detections: int  # as given
    n_scored: int  # left after the per-image cap, empty boxes and the verified-category filter

    def category_ap(self, k: int, area: str = "all", iou: float | None = None) -> float | None:
        """AP of the k-th evaluated category (None when it has no ground truth in `area`)."""
        a = _area_index(area)
        p = self.precision[:, :, k, a] if iou is None else self.precision[_threshold_index(iou), :, k, a]
        return _mean_valid(p)

    def mean_ap(self, area: str = "all", iou: float | None = None, frequency: str | None = None) -> float | None:
        """The official summary: the mean of every valid precision entry, i.e. of the categories' APs."""
        p = self.precision[..., _area_index(area)]  # [T, R, K]
        if iou is not None:
            p = p[_threshold_index(iou)]
        if frequency is not None:
            p = p[..., [k for k, f in enumerate(self.frequencies) if f == frequency]]
        return _mean_valid(p)

    def metrics(self) -> dict[str, Any]:
        """`coco_map`'s keys (mAP, AP50, AP75, per_category, n_detections) plus LVIS' own, as fractions."""
        per_category = {
            name: {"AP": self.category_ap(k), "AP50": self.category_ap(k, iou=0.5),
                   "AP75": self.category_ap(k, iou=0.75), "n_gt": self.n_gt[k], "frequency": self.frequencies[k]}
            for k, name in enumerate(self.names)}
        out: dict[str, Any] = {"mAP": self.mean_ap(), "AP50": self.mean_ap(iou=0.5), "AP75": self.mean_ap(iou=0.75)}
        for label, area in (("APs", "small"), ("APm", "medium"), ("APl", "large")):
            out[label] = self.mean_ap(area)
        for f in FREQUENCIES:
            out[f"AP{f}"] = self.mean_ap(frequency=f)
        out[f"AR@{MAX_DETS}"] = _mean_valid(self.recall[:, :, 0])
        out.update({"per_category": per_category, "n_detections": self.n_detections, "n_scored": self.n_scored,
                    "ap_protocol": "lvis"})
        return out


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def _area_index(area: str) -> int:
    return [name for name, _, _ in AREA_RANGES].index(area)


def _threshold_index(iou: float) -> int:
    (where,) = np.where(IOU_THRESHOLDS == iou)
    if not where.size:
        raise ValueError(f"IoU {iou} is not one of the thresholds {IOU_THRESHOLDS.round(2).tolist()}")
    return int(where[0])


def box_iou_xywh(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of every detection with every box, both [N, 4] as [x, y, w, h]: [D, G] (pycocotools' rule, no crowd)."""
    dx1, dy1 = dt[:, None, 0], dt[:, None, 1]
    dx2, dy2 = dx1 + dt[:, None, 2], dy1 + dt[:, None, 3]
    gx1, gy1 = gt[None, :, 0], gt[None, :, 1]
    gx2, gy2 = gx1 + gt[None, :, 2], gy1 + gt[None, :, 3]
    iw = np.minimum(dx2, gx2) - np.maximum(dx1, gx1)  # [D, G]
    ih = np.minimum(dy2, gy2) - np.maximum(dy1, gy1)  # [D, G]
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)  # [D, G]
    union = (dt[:, None, 2] * dt[:, None, 3]) + (gt[None, :, 2] * gt[None, :, 3]) - inter  # [D, G]
    return inter / union


# ----------------------------------------------------------------------------- evaluation


def lvis_eval(
    gt: dict[str, Any],
    detections: Iterable[Detection],
    *,
    category_ids: Sequence[int] | None = None,
    max_dets: int = MAX_DETS,
) -> LvisResult:
    """Federated box AP of `detections` on LVIS-style ground truth `gt` (see the module docstring).

    `category_ids` picks the categories to score (default: all of gt's, sorted, as the official
    API); detections of the others still take their place in the per-image cap.
    """
    images = {int(im["id"]): im for im in gt["images"]}
    cats = {int(c["id"]): c for c in gt["categories"]}
    cat_ids = sorted(cats) if category_ids is None else [int(c) for c in category_ids]
    unknown = [c for c in cat_ids if c not in cats]
    if unknown:
        raise ValueError(f"category ids {unknown} are not in the ground truth's categories")
    chosen = set(cat_ids)
    img_ids = sorted(images)

    # ground truth per (image, category), in annotation order; an empty box counts nowhere
    gts: dict[tuple[int, int], list[tuple[list[float], float]]] = defaultdict(list)
    positive: dict[int, set[int]] = defaultdict(set)  # image -> categories with a box on it
    for ann in gt["annotations"]:
        image_id, cid = int(ann["image_id"]), int(ann["category_id"])
        if image_id not in images:
            raise ValueError(f"annotation {ann.get('id')} is on image {image_id}, which gt['images'] lacks")
        box = [float(v) for v in ann["bbox"]]
        area = float(ann["area"]) if ann.get("area") is not None else box[2] * box[3]
        if cid in chosen and 0 < area < float("inf"):
            gts[image_id, cid].append((box, area))
            positive[image_id].add(cid)
    negative = {i: set(int(c) for c in im.get("neg_category_ids") or ()) for i, im in images.items()}
    not_exhaustive = {i: set(int(c) for c in im.get("not_exhaustive_category_ids") or ()) for i, im in images.items()}

    given = [(int(i), int(c), [float(v) for v in box], float(s)) for i, c, box, s in detections]
    for image_id, cid, _, _ in given:
        if image_id not in images:
            raise ValueError(f"a detection is on image {image_id}, which the ground truth lacks")
        if cid not in cats:
            raise ValueError(f"a detection has category {cid}, which the ground truth lacks")
    dts: dict[tuple[int, int], list[tuple[list[float], float]]] = defaultdict(list)
    n_scored = 0
    for det in _cap_per_image(given, max_dets):
        image_id, cid, box, score = det
        area = box[2] * box[3]
        if cid not in chosen or not 0 < area < float("inf"):
            continue
        if cid not in negative[image_id] and cid not in positive[image_id]:
            continue  # the image's labels say nothing about this category
        dts[image_id, cid].append((box, score))
        n_scored += 1

    T, R, K, A = len(IOU_THRESHOLDS), len(RECALL_POINTS), len(cat_ids), len(AREA_RANGES)
    precision = -np.ones((T, R, K, A))
    recall = -np.ones((T, K, A))
    for k, cid in enumerate(cat_ids):
        for a, (_, lo, hi) in enumerate(AREA_RANGES):
            judged = [_judge_image(gts[i, cid], dts[i, cid], lo, hi, cid in not_exhaustive[i])
                      for i in img_ids if gts.get((i, cid)) or dts.get((i, cid))]
            if judged:
                _accumulate(judged, precision[:, :, k, a], recall[:, k, a])
    n_gt = [sum(1 for i in img_ids for _ in gts.get((i, cid), ())) for cid in cat_ids]
    return LvisResult(category_ids=cat_ids, names=[str(cats[c].get("name", c)) for c in cat_ids],
                      frequencies=[cats[c].get("frequency") for c in cat_ids], n_gt=n_gt,
                      precision=precision, recall=recall, n_detections=len(given), n_scored=n_scored)


def _cap_per_image(detections: list[Detection], max_dets: int) -> list[Detection]:
    """At most `max_dets` per image, the highest scores (ties in input order); a negative cap keeps all."""
    by_image: dict[int, list[Detection]] = defaultdict(list)
    for det in detections:
        by_image[det[0]].append(det)
    if max_dets < 0:
        return [d for dets in by_image.values() for d in dets]
    return [d for dets in by_image.values()
            for d in (dets if len(dets) <= max_dets else sorted(dets, key=lambda d: d[3], reverse=True)[:max_dets])]


@dataclass
class _Judged:
    """One (image, category, area range): detections in score order, what each is at every threshold."""

    scores: np.ndarray  # [D]
    matched: np.ndarray  # [T, D] bool: matched a box
    ignored: np.ndarray  # [T, D] bool: neither true nor false positive
    gt_ignored: np.ndarray  # [G] bool: box outside the area range


def _judge_image(gt: list[tuple[list[float], float]], dt: list[tuple[list[float], float]], lo: float, hi: float,
                 not_exhaustive: bool) -> _Judged:
    gt_ignored = np.array([not lo <= area <= hi for _, area in gt], dtype=bool)  # [G]
    gt_order = np.argsort(gt_ignored, kind="mergesort")  # boxes that count first
    gt_ignored = gt_ignored[gt_order]
    dt_order = np.argsort([-s for _, s in dt], kind="mergesort")
    dt_boxes = np.array([dt[j][0] for j in dt_order], dtype=float).reshape(-1, 4)  # [D, 4]
    scores = np.array([dt[j][1] for j in dt_order], dtype=float)  # [D]
    gt_boxes = np.array([gt[j][0] for j in gt_order], dtype=float).reshape(-1, 4)  # [G, 4]
    ious = box_iou_xywh(dt_boxes, gt_boxes) if len(dt) and len(gt) else np.zeros((len(dt), len(gt)))  # [D, G]

    T, D, G = len(IOU_THRESHOLDS), len(dt), len(gt)
    matched = np.zeros((T, D), dtype=bool)
    ignored = np.zeros((T, D), dtype=bool)
    if D and G:
        for t, threshold in enumerate(IOU_THRESHOLDS):
            taken = np.zeros(G, dtype=bool)
            for d in range(D):
                best, m = min(threshold, 1 - 1e-10), -1
                for g in range(G):
                    if taken[g]:
                        continue
                    if m > -1 and not gt_ignored[m] and gt_ignored[g]:
                        break  # matched a box that counts; the rest are ignored boxes
                    if ious[d, g] < best:
                        continue
                    best, m = ious[d, g], g  # a later box at the same IoU wins, as the official loop
                if m > -1:
                    taken[m] = True
                    matched[t, d] = True
                    ignored[t, d] = gt_ignored[m]
    dt_areas = dt_boxes[:, 2] * dt_boxes[:, 3]  # [D]
    forgiven = (dt_areas < lo) | (dt_areas > hi) | not_exhaustive  # [D]: if unmatched, not a false positive
    ignored |= ~matched & forgiven[None, :]
    return _Judged(scores, matched, ignored, gt_ignored)


def _accumulate(judged: list[_Judged], precision: np.ndarray, recall: np.ndarray) -> None:
    """Precision at the recall points ([T, R], in place) and final recall ([T]) of one category and area."""
    scores = np.concatenate([j.scores for j in judged])  # [N], images in id order
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([j.matched for j in judged], axis=1)[:, order]  # [T, N]
    ignored = np.concatenate([j.ignored for j in judged], axis=1)[:, order]  # [T, N]
    n_gt = int(np.count_nonzero(~np.concatenate([j.gt_ignored for j in judged])))
    if n_gt == 0:
        return  # stays -1: no ground truth here, left out of every mean
    tp_sum = np.cumsum(matched & ~ignored, axis=1).astype(float)  # [T, N]
    fp_sum = np.cumsum(~matched & ~ignored, axis=1).astype(float)  # [T, N]
    n = tp_sum.shape[1]
    for t in range(len(IOU_THRESHOLDS)):
        tp, fp = tp_sum[t], fp_sum[t]
        rc = tp / n_gt
        recall[t] = rc[-1] if n else 0.0
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # the best precision at this recall or beyond
        at = np.searchsorted(rc, RECALL_POINTS, side="left")  # [R]
        values = np.zeros(len(RECALL_POINTS))
        reached = at < n  # recall points past the last detection keep precision 0
        values[reached] = pr[at[reached]]
        precision[t] = values


# ----------------------------------------------------------------------------- vrft-lite records


def lvis_inputs(records: Sequence[Any], detections: Sequence[Sequence[tuple[Sequence[float], float]]]
                ) -> tuple[dict[str, Any], list[Detection], list[str]]:
    """(LVIS-style ground truth, detections, category names in id order) from detection records.

    Each eval record is one (image, category) pair the image's labels verify (`data/coco.py`
    makes one only where the category is annotated or in `neg_category_ids`): its boxes are
    the category's annotations there, no box means a verified negative, `meta["not_exhaustive"]`
    puts the category in the image's not-exhaustive list and `meta["frequency"]` (r / c / f)
    gives the category's frequency. Records of one image share `meta["image_id"]`, so the
    300-per-image cap spans their categories; a record without one is an image of its own.
    `detections` are pixel (box_xyxy, confidence) lists, one per record.
    """
    from visualrft_lite.answers import parse_solution

    if len(records) != len(detections):
        raise ValueError(f"{len(records)} records but {len(detections)} detection lists")
    names = list(dict.fromkeys(str(rec.fields.get("category", "")) for rec in records))  # first-seen order
    cat_id = {name: k + 1 for k, name in enumerate(names)}
    frequency: dict[int, str] = {}
    images: dict[Any, dict[str, Any]] = {}
    annotations: list[dict[str, Any]] = []
    results: list[Detection] = []
    seen: set[tuple[int, int]] = set()
    for index, (rec, dets) in enumerate(zip(records, detections)):
        if rec.meta.get("crowd_boxes"):
            raise ValueError(f"record {index} ({rec.image_name}) has crowd boxes; LVIS has none: score it with coco_map")
        key = ("image", rec.meta["image_id"]) if rec.meta.get("image_id") is not None else ("record", index)
        image = images.setdefault(key, {"id": len(images) + 1, "neg_category_ids": [], "not_exhaustive_category_ids": []})
        cid = cat_id[str(rec.fields.get("category", ""))]
        if (image["id"], cid) in seen:
            raise ValueError(f"record {index} repeats category {names[cid - 1]!r} on image {key[1]}")
        seen.add((image["id"], cid))
        if rec.meta.get("frequency"):
            frequency[cid] = str(rec.meta["frequency"])
        truth = parse_solution("detect", rec.solution, image_size=rec.image_size)
        for x1, y1, x2, y2 in ((float(v) for v in box) for box in truth):
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": cid,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        if not truth:
            image["neg_category_ids"].append(cid)
        if rec.meta.get("not_exhaustive"):
            image["not_exhaustive_category_ids"].append(cid)
        for box, confidence in dets:
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append((image["id"], cid, [x1, y1, x2 - x1, y2 - y1], float(confidence)))
    categories = [{"id": cat_id[n], "name": n, "frequency": frequency.get(cat_id[n])} for n in names]
    return {"images": list(images.values()), "annotations": annotations, "categories": categories}, results, names


def lvis_map(records: Sequence[Any], detections: Sequence[Sequence[tuple[Sequence[float], float]]]) -> dict[str, Any]:
    """`coco_map` for LVIS records: federated AP (300 per image), per-category AP, mean, APr/APc/APf."""
    gt, results, _ = lvis_inputs(records, detections)
    return lvis_eval(gt, results).metrics()
