"""detect: every object of a category, with boxes and confidences (COCO / LVIS few-shot detection).

Truth: pixel boxes [[x1, y1, x2, y2], ...] ([] = no objects), or Visual-RFT's
"<answer>[{'Position': [...], ...}]</answer>" / "No Objects" with 0-1000 boxes. Answer: the
detection list, in pixels, most confident first. Reward: `iou` and `confidence` (the paper's
R_IoU and R_conf). Metrics: COCO mAP from pycocotools (`coco_eval.py`), or for LVIS records
LVIS' federated AP (`lvis_eval.py`). The two-stage protocol first asks whether the category
is present (`gate_template`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from visualrft_lite.answers import (
    Box,
    answer_or_text,
    parse_detections,
    rel1000_to_pixels,
    truth_box,
)
from visualrft_lite.prompts import with_tail
from visualrft_lite.rewards import RewardOptions
from visualrft_lite.tasks.base import PromptField, Scored, Task, register_task, task_reward

if TYPE_CHECKING:
    from PIL import Image

    from visualrft_lite.answers import CoordMap
    from visualrft_lite.data.records import Record

Detections = list[tuple[Box, float]]
"""Parsed answer: (pixel box, confidence in [0, 1]), most confident first."""

AP_PROTOCOLS = {"coco": "COCO AP (pycocotools, 100 detections per image)",
                "lvis": "LVIS federated AP (verified categories only, 300 detections per image)"}
"""metrics.json's `ap_protocol` -> the line eval's table opens with."""
FREQUENCIES = {"r": "rare", "c": "common", "f": "frequent"}


@register_task
class Detect(Task):
    """Find every object of a category: boxes and confidences (COCO mAP)"""

    name = "detect"
    solution_help = 'pixel boxes [[x1, y1, x2, y2], ...] ([] = no objects)'
    templates = {
        "detect": with_tail(
            "Detect all objects belonging to the category '{category}' in the image, and provide the bounding "
            "boxes ({box_range}) and confidence (between 0 and 1, with two decimal places).\n"
            "If no object belonging to the category '{category}' in the image, return 'No Objects'.\n",
            "[{'Position': [x1, y1, x2, y2], 'Confidence': number}, ...]",
        ),
        # First stage of the paper's two-stage evaluation: boxes are asked only where "yes".
        "presence": with_tail("Is there {a_category} in the image? Answer yes or no.\n", "yes or no"),
    }
    fields = (PromptField("category", "the category to find", required=True, example="bus"),)
    coordinates = True
    accuracy = "iou"
    headline = "mAP"
    gate_template = "presence"

    def parse_truth(self, solution: Any, *, image_size: Sequence[float] | None = None) -> list[Box]:
        what = "detect solution"
        if isinstance(solution, str):
            items = parse_detections(answer_or_text(solution))
            if items is None or any(box is None for box, _ in items):
                raise ValueError(f"{what}: cannot read boxes from {solution[:200]!r}")
            return [rel1000_to_pixels(box, image_size, what) for box, _ in items]
        if isinstance(solution, Sequence):
            return [truth_box(box, what) for box in solution]
        raise ValueError(f"{what} must be a list of pixel boxes [x1, y1, x2, y2] ([] = no objects); got {solution!r}")

    def record_solution(self, solution: Any, *, image_size: tuple[int, int], synonyms: dict[str, list[str]],
                        clip: Callable[[list[Box]], list[Box]]) -> list[Box]:
        return clip(self.parse_truth(solution, image_size=image_size))

    def parse_answer(self, answer: str | None, coord_map: CoordMap | None) -> Detections:
        """Valid boxes, clipped, deduplicated, most confident first (confidence clipped to [0, 1])."""
        items = (parse_detections(answer) if answer is not None else None) or []
        if coord_map is None:
            return []
        valid = [(coord_map.box(box), conf) for box, conf in items if box is not None]
        ordered = sorted(((box, conf) for box, conf in valid if box is not None), key=lambda item: -item[1])
        detections, seen = [], set()
        for box, conf in ordered:
            if box not in seen:
                seen.add(box)
                detections.append((box, min(max(conf, 0.0), 1.0)))
        return detections

    def think(self, record: Record) -> str:
        return f"I look for every {record.fields.get('category', 'object')} in the image and locate each one."

    def sft_answer(self, record: Record, to_model_box: Callable[[Sequence[float]], list[int]]) -> str:
        if not record.solution:
            return "No Objects"
        return "[" + ", ".join(f"{{'Position': {to_model_box(b)}, 'Confidence': 1.00}}" for b in record.solution) + "]"

    def answer_json(self, parsed: Detections) -> list[dict[str, Any]]:
        return [{"box": [round(v, 2) for v in box], "confidence": round(conf, 4)} for box, conf in parsed]

    def answer_text(self, parsed: Detections) -> str:
        return f"{len(parsed)} box{'es' if len(parsed) != 1 else ''}"

    truth_text = answer_text

    def truth_label(self, record: Record) -> str:
        return str(record.fields.get("category", "object"))

    def describe(self, parsed: Detections, fields: dict[str, Any]) -> list[str]:
        return [f"  {len(parsed)} {fields.get('category', 'object')} box{'es' if len(parsed) != 1 else ''} "
                "(pixels x1, y1, x2, y2; confidence)",
                *(f"    [{', '.join(f'{v:.0f}' for v in box)}]  {conf:.2f}" for box, conf in parsed)]

    def draw_answer(self, image: Image.Image, parsed: Detections, *, label: str | None = None,
                    colour: tuple[int, int, int] | None = None) -> Image.Image:
        from visualrft_lite.draw import PALETTE, Canvas

        canvas = Canvas.of(image)
        for k, (box, confidence) in enumerate(parsed):
            canvas.box(box, colour or PALETTE[k % len(PALETTE)], f"{label or 'object'} {confidence:.2f}")
        return canvas.image

    def draw_truth(self, image: Image.Image, truth: list[Box], *, label: str | None = None,
                   colour: tuple[int, int, int] | None = None) -> Image.Image:
        from visualrft_lite.draw import PALETTE, TEXT_COLOUR, Canvas

        canvas = Canvas.of(image, line_divisor=200 if colour else 100)
        for k, box in enumerate(truth):
            canvas.box(box, colour or PALETTE[k % len(PALETTE)], None if colour else label or "object")
        if not truth and not colour:
            canvas.corner(f"{label or 'object'}: No Objects", TEXT_COLOUR)
        return canvas.image

    def group_counts(self, records: Sequence[Record]) -> tuple[str, dict[str, str]]:
        pos: Counter[str] = Counter()
        neg: Counter[str] = Counter()
        for r in records:
            (pos if r.solution else neg)[str(r.fields.get("category", "?"))] += 1
        return "categories", {c: f"{pos[c]} with boxes, {neg[c]} no objects" for c in sorted(set(pos) | set(neg))}

    def metrics(self, scored: Sequence[Scored]) -> dict[str, Any]:
        """LVIS' federated AP for LVIS records (the reader marks them `federated`), else COCO's."""
        records, parsed = [s.record for s in scored], [s.parsed for s in scored]
        if records and all(r.meta.get("federated") for r in records):
            from visualrft_lite.tasks.lvis_eval import lvis_map

            return lvis_map(records, parsed)
        from visualrft_lite.tasks.coco_eval import coco_map

        return {**coco_map(records, parsed), "ap_protocol": "coco"}

    def metric_lines(self, metrics: dict[str, Any]) -> list[tuple[str, float | None] | str]:
        lines: list[tuple[str, float | None] | str] = [AP_PROTOCOLS.get(metrics.get("ap_protocol", "coco"), "")]
        lines += [("mAP (IoU .50:.95)", metrics["mAP"]), ("AP50", metrics["AP50"]), ("AP75", metrics["AP75"])]
        lines += [(f"AP{f} ({FREQUENCIES[f]} categories)", metrics[f"AP{f}"]) for f in FREQUENCIES
                  if metrics.get(f"AP{f}") is not None]
        return lines + [(f"  AP {name} ({c['n_gt']} boxes)", c["AP"]) for name, c in metrics["per_category"].items()]

    def rollout_stats(self, parsed: Sequence[Detections], truths: Sequence[Any], group_size: int, *,
                      low_confidence: float) -> dict[str, Any]:
        from visualrft_lite.alerts import detection_box_stats

        return detection_box_stats(parsed, low_confidence)


@task_reward("detect", "iou", "confidence")
def detect_reward(
    answer: str | None, truth: list[Box], *, coord_map: CoordMap, options: RewardOptions, **_: Any
) -> dict[str, float]:
    """iou and confidence of a detection list against pixel boxes.

    Predictions are sorted by confidence (stable); each takes the unmatched ground-truth box
    of highest IoU and matches when IoU >= iou_threshold. iou: the sum of matched IoUs over
    max(#gt, #pred) (reward.iou_denominator: pred, over #pred); confidence: the mean over
    predictions of c if matched else 1 - c. Invalid items (non-finite numbers, no area inside
    the image) count as unmatched predictions with confidence reward 0; exact duplicate boxes
    count once. On a negative image only "No Objects" (or []) is right.

    >>> from visualrft_lite.answers import CoordMap
    >>> cm = CoordMap.for_model("pixel", (100, 100))
    >>> answer = "[{'Position': [0, 0, 10, 10], 'Confidence': 0.8}, {'Position': [50, 50, 60, 60], 'Confidence': 0.3}]"
    >>> detect_reward(answer, [(0, 0, 10, 10)], coord_map=cm, options=RewardOptions())  # (1 + 0) / 2; (0.8 + 0.7) / 2
    {'iou': 0.5, 'confidence': 0.75}
    """
    items = parse_detections(answer) if answer is not None else None
    if items is None:
        return {"iou": 0.0, "confidence": 0.0}
    # CoordMap.box inlined (this function is the hot path of a detection run): scale, clip
    # to the image, drop boxes without area; `x2 < width` style tests are False for NaN.
    sx, sy, width, height = coord_map.sx, coord_map.sy, coord_map.width, coord_map.height
    valid: list[tuple[float, Box]] = []
    for box, conf in items:
        if box is None:
            continue
        x1, y1, x2, y2 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        x1 = 0.0 if x1 < 0.0 else width if x1 > width else x1
        y1 = 0.0 if y1 < 0.0 else height if y1 > height else y1
        x2 = 0.0 if x2 < 0.0 else width if x2 > width else x2
        y2 = 0.0 if y2 < 0.0 else height if y2 > height else y2
        if x2 > x1 and y2 > y1 and x2 < math.inf and y2 < math.inf:
            valid.append((conf, (x1, y1, x2, y2)))
    n_invalid = len(items) - len(valid)
    valid.sort(key=itemgetter(0), reverse=True)  # stable: equal confidences keep the written order
    if len({box for _, box in valid}) < len(valid):  # exact duplicates: keep the most confident copy
        seen: set[Box] = set()
        valid = [(c, box) for c, box in valid if not (box in seen or seen.add(box))]  # type: ignore[func-returns-value]
    preds = [(1.0 if c > 1.0 else 0.0 if c < 0.0 else c, box) for c, box in valid]
    n_pred = len(preds) + n_invalid
    if not truth:  # a negative image: only "No Objects" (or []) is right
        if n_pred == 0:
            return {"iou": 1.0, "confidence": 1.0}
        return {"iou": 0.0, "confidence": sum(1.0 - c for c, _ in preds) / n_pred}
    if n_pred == 0:
        return {"iou": 0.0, "confidence": 0.0}

    # Ground truth sorted by x1 (stable), so the scan for overlaps stops at the first box
    # starting right of the prediction; equal IoUs go to the leftmost box.
    unmatched = sorted(((g[0], g[1], g[2], g[3], (g[2] - g[0]) * (g[3] - g[1])) for g in truth), key=itemgetter(0))
    threshold = options.iou_threshold
    iou_sum = conf_sum = 0.0
    for conf, (x1, y1, x2, y2) in preds:  # box_iou inlined: this loop is the hot path
        area = (x2 - x1) * (y2 - y1)
        best, best_j = 0.0, -1
        for j, (gx1, gy1, gx2, gy2, garea) in enumerate(unmatched):
            if gx1 >= x2:
                break
            iw = (x2 if x2 < gx2 else gx2) - (x1 if x1 > gx1 else gx1)
            if iw <= 0:
                continue
            ih = (y2 if y2 < gy2 else gy2) - (y1 if y1 > gy1 else gy1)
            if ih <= 0:
                continue
            inter = iw * ih
            iou = inter / (area + garea - inter)
            if iou > best:
                best, best_j = iou, j
        if best_j >= 0 and best >= threshold:
            iou_sum += best
            conf_sum += conf
            del unmatched[best_j]
        else:
            conf_sum += 1.0 - conf
    denominator = max(len(truth), n_pred) if options.iou_denominator == "max" else n_pred
    return {"iou": iou_sum / denominator, "confidence": conf_sum / n_pred}
