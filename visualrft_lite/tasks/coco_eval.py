"""COCO mAP for detection with pycocotools, the way the paper reports it.

Each record is one (image, category) pair; predictions are absolute [x, y, w, h] with score =
confidence; mAP is the mean of per-category AP over the categories that have ground truth in
the split (the paper's "mAP over the chosen categories"). numpy and pycocotools are imported
when a metric is computed.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from visualrft_lite.tasks import get_task

if TYPE_CHECKING:
    from visualrft_lite.data.records import Record

DETECT = get_task("detect")


def coco_inputs(
    records: Sequence[Record], detections: Sequence[Sequence[tuple[Sequence[float], float]]]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """(ground-truth COCO dict, COCO result list, category names in id order) for COCOeval.

    Each record is one (image, category) pair and becomes its own COCO image: COCOeval scores
    every (image, category) pair on its own, so this equals grouping records by image, and it
    also keeps LVIS' federated rule (a category is only scored on the images that list it).
    Crowd boxes (meta["crowd_boxes"]) are `iscrowd` ground truth: detections on them are ignored.
    """
    names: list[str] = []
    for rec in records:
        name = str(rec.fields.get("category", ""))
        if name not in names:
            names.append(name)
    cat_id = {name: k + 1 for k, name in enumerate(names)}
    images, annotations, results = [], [], []
    for image_id, (rec, dets) in enumerate(zip(records, detections), start=1):
        width, height = rec.image_size or (0, 0)
        images.append({"id": image_id, "width": width, "height": height})
        cid = cat_id[str(rec.fields.get("category", ""))]
        truth = DETECT.parse_truth(rec.solution, image_size=rec.image_size)
        crowd = rec.meta.get("crowd_boxes") or []
        for box, iscrowd in [*((b, 0) for b in truth), *((b, 1) for b in crowd)]:
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cid,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": iscrowd})
        for box, confidence in dets:
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": image_id, "category_id": cid, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(confidence)})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": cat_id[n], "name": n} for n in names]}
    return gt, results, names


def coco_map(
    records: Sequence[Record], detections: Sequence[Sequence[tuple[Sequence[float], float]]]
) -> dict[str, Any]:
    """mAP / AP50 / AP75 / per-category AP with pycocotools COCOeval ("bbox", maxDets 100).

    `detections` are pixel (box_xyxy, confidence) lists, one per record. A category without
    ground truth in the split has AP None and is left out of the mean.
    """
    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, results, names = coco_inputs(records, detections)
    n_gt = Counter(a["category_id"] for a in gt["annotations"] if not a["iscrowd"])
    per_category: dict[str, dict[str, Any]] = {}
    if results:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes adds keys to its input
            ev = COCOeval(coco_gt, coco_dt, "bbox")
            ev.params.catIds = [c["id"] for c in gt["categories"]]
            ev.evaluate()
            ev.accumulate()
        precision = ev.eval["precision"]  # [T iou thresholds, R recall points, K categories, A areas, M maxDets]
        thresholds = list(np.round(ev.params.iouThrs, 2))
        t50, t75 = thresholds.index(0.5), thresholds.index(0.75)

        def ap(p: Any) -> float | None:
            valid = p[p > -1]  # -1: the category has no ground truth
            return float(valid.mean()) if valid.size else None

        for k, name in enumerate(names):
            p = precision[:, :, k, 0, -1]  # area "all", maxDets 100
            per_category[name] = {"AP": ap(p), "AP50": ap(p[t50]), "AP75": ap(p[t75]), "n_gt": n_gt[k + 1]}
    else:  # no detections at all: pycocotools cannot load an empty result list
        for k, name in enumerate(names):
            value = 0.0 if n_gt[k + 1] else None
            per_category[name] = {"AP": value, "AP50": value, "AP75": value, "n_gt": n_gt[k + 1]}

    def mean_of(key: str) -> float | None:
        values = [c[key] for c in per_category.values() if c[key] is not None]
        return sum(values) / len(values) if values else None

    return {"mAP": mean_of("AP"), "AP50": mean_of("AP50"), "AP75": mean_of("AP75"),
            "per_category": per_category, "n_detections": len(results)}
