"""Verifiable rewards: pure functions of (completion, ground truth), one per task.

Stdlib only (no torch, no numpy): importable and testable in milliseconds. Training,
evaluation and `vrft-lite reward` all call `score`, so the reward and the metric can
never drift apart. Every component lies in [0, 1] and is finite for any input string;
`total` is their weighted sum.

    format      1 if the completion is <think>…</think> <answer>…</answer>      (every task)
    accuracy    classify / count / choice: the answer is right
    iou         detect: sum of matched IoUs / max(#gt, #pred); ground: IoU of the first box
    confidence  detect: mean over predictions of c if matched else 1 - c
    point       point: fraction of points inside the target box

How this differs from the released Visual-RFT code (see shared/reference/visual-rft.md):
only the answer block after </think> is scored; classification never accepts a substring
of the label (so "" and "a" score 0); no math verifier runs on box lists; "No Objects" on
a negative image scores full marks; NaN confidences make an item invalid, never a NaN
reward; grounding is IoU in [0, 1], not GIoU + 1 with a string-match bonus.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from operator import itemgetter
from typing import Any, Literal

from visualrft_lite.answers import (
    COORDS,
    TASKS,
    Box,
    CoordMap,
    extract_answer,
    normalize_label,
    parse_choice,
    parse_count,
    parse_detections,
    parse_ground_box,
    parse_points,
    parse_solution,
)
from visualrft_lite.errors import did_you_mean

COMPONENTS: dict[str, tuple[str, ...]] = {
    "classify": ("accuracy",),
    "count": ("accuracy",),
    "choice": ("accuracy",),
    "detect": ("iou", "confidence"),
    "ground": ("iou",),
    "point": ("point",),
}
"""The task's components besides `format`."""
ALL_COMPONENTS: tuple[str, ...] = ("format", "accuracy", "iou", "confidence", "point")
BOX_TASKS = frozenset({"detect", "ground", "point"})


def _one_of(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"reward.{name} must be one of {', '.join(choices)}; got {value!r}")


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"reward.{name} must be a finite number; got {value!r}")
    return float(value)


@dataclass
class RewardOptions:
    """Every choice a preset can make about the reward (the YAML `reward:` section)."""

    coords: Literal["rel1000", "pixel", "resized", "auto"] = "rel1000"
    """How the model writes coordinates: rel1000 = integers 0-1000 relative to the image
    (Qwen2-VL, Qwen3-VL, Qwen3.5); pixel = absolute pixels of the original image; resized =
    absolute pixels of the processor-resized image (Qwen2.5-VL; needs the resized size).
    auto follows model.coords: resolved from the checkpoint before anything is scored."""
    iou_threshold: float = 0.5
    """detect: a prediction matches a ground-truth box at IoU >= this (the paper: 0.5)."""
    iou_denominator: Literal["max", "pred"] = "max"
    """detect: divide the sum of matched IoUs by max(#gt, #pred) (rewards recall too; the
    released code) or by #pred (the mean over predictions; the paper's text)."""
    match: Literal["exact", "contains"] = "exact"
    """classify: the normalised answer equals the label or a synonym (exact), or contains
    it as a whole-word run (contains; never the reverse, so "a" cannot match "abyssinian";
    but an answer listing several labels matches each of them)."""
    ground_metric: Literal["iou", "giou"] = "iou"
    """ground: IoU, or (GIoU + 1) / 2, which still rewards moving towards a missed box."""
    point_metric: Literal["inside", "distance"] = "inside"
    """point: fraction of points inside the box, or mean exp(-d / point_sigma) with d the
    distance to the box in box diagonals (0 inside)."""
    point_sigma: float = 0.1
    """point (distance): length scale in box diagonals; a point 0.1 diagonal away scores e^-1."""
    weights: dict[str, float] = field(
        default_factory=lambda: {"format": 1.0, "accuracy": 1.0, "iou": 1.0, "confidence": 1.0, "point": 1.0}
    )
    """total = sum of weight · component; a component left out weighs 1.0 (the paper's sum)."""

    def __post_init__(self) -> None:
        _one_of(self.coords, "coords", (*COORDS, "auto"))
        self.iou_threshold = _number(self.iou_threshold, "iou_threshold")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"reward.iou_threshold must be in (0, 1]; got {self.iou_threshold}")
        _one_of(self.iou_denominator, "iou_denominator", ("max", "pred"))
        _one_of(self.match, "match", ("exact", "contains"))
        _one_of(self.ground_metric, "ground_metric", ("iou", "giou"))
        _one_of(self.point_metric, "point_metric", ("inside", "distance"))
        self.point_sigma = _number(self.point_sigma, "point_sigma")
        if self.point_sigma <= 0:
            raise ValueError(f"reward.point_sigma must be > 0; got {self.point_sigma}")
        if not isinstance(self.weights, dict):
            raise ValueError(f"reward.weights must be a mapping of component to weight; got {self.weights!r}")
        weights = {}
        for name, weight in self.weights.items():
            if name not in ALL_COMPONENTS:
                hint = did_you_mean(name, ALL_COMPONENTS, otherwise=f" (components: {', '.join(ALL_COMPONENTS)})")
                raise ValueError(f"reward.weights: unknown component {name!r}{hint}")
            weights[name] = _number(weight, f"weights.{name}")
            if not 0.0 <= weights[name] <= 1000.0:  # bounded so that total can never overflow
                raise ValueError(f"reward.weights.{name} must be in [0, 1000]; got {weight}")
        self.weights = weights

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "reward") -> RewardOptions:
        """Build from a mapping (a YAML section, CLI options); an unknown key is a ValueError
        naming it and `where`."""
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                hint = did_you_mean(key, known, otherwise=f" (known: {', '.join(known)})")
                raise ValueError(f"unknown key {key!r} in {where}{hint}")
        try:
            return cls(**values)
        except ValueError as e:
            if where == "reward":  # the messages already say reward.<key>
                raise
            raise ValueError(f"{e} (in {where})") from None

    def weight(self, component: str) -> float:
        return self.weights.get(component, 1.0)


DEFAULT_OPTIONS = RewardOptions()

# ----------------------------------------------------------------------------- geometry


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two x1y1x2y2 boxes; 0 when either has no area.

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))  # 50 / (100 + 100 - 50)
    0.3333333333333333
    """
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    iou = inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    return iou if 0.0 <= iou <= 1.0 else 0.0  # areas that overflow to inf give inf / inf = NaN


def box_giou(a: Box, b: Box) -> float:
    """Generalised IoU in [-1, 1]: IoU - (enclosing area - union) / enclosing area.

    >>> box_giou((0, 0, 10, 10), (20, 0, 30, 10))  # union 200, hull 300: 0 - 100/300
    -0.3333333333333333
    """
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = area_a + area_b - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    if union <= 0 or hull <= 0:
        return -1.0
    giou = inter / union - (hull - union) / hull
    return giou if -1.0 <= giou <= 1.0 else -1.0  # NaN when areas overflow to inf


# ----------------------------------------------------------------------------- the rewards

TaskReward = Callable[..., dict[str, float]]
"""(answer: str | None, truth, *, coord_map: CoordMap | None, options: RewardOptions) -> components."""
REWARDS: dict[str, TaskReward] = {}


def register(task: str) -> Callable[[TaskReward], TaskReward]:
    """Register a task's reward under its name (`REWARDS[task]`)."""

    def add(fn: TaskReward) -> TaskReward:
        REWARDS[task] = fn
        return fn

    return add


def get_reward(task: str) -> TaskReward:
    if task not in REWARDS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(REWARDS)}")
    return REWARDS[task]


_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_SPACE = re.compile(r"\s*")


def format_reward(completion: str) -> float:
    """1.0 if the stripped completion is <think>…</think> then <answer>…</answer>, else 0.0.

    >>> format_reward("<think>a dog</think>\\n<answer>dog</answer>\\n"), format_reward("<answer>dog</answer>")
    (1.0, 0.0)
    """
    # The same test as `_FORMAT.fullmatch(text)` (a test checks they agree), without the lazy
    # regex's character-by-character scan of the reasoning: 5x faster on real completions.
    text = completion.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return 0.0
    last_open = len(text) - 17  # an <answer> must start here or before, to leave room for </answer>
    close = text.find("</think>", 7)
    while 0 <= close:
        after = close + 8
        start = _SPACE.match(text, after).end()  # type: ignore[union-attr]
        if start > last_open:
            return 0.0
        if text.startswith("<answer>", start):
            return 1.0
        close = text.find("</think>", close + 1)
    return 0.0


@register("classify")
def classify_reward(
    answer: str | None, truth: tuple[str, ...], *, options: RewardOptions, **_: Any
) -> dict[str, float]:
    """accuracy 1 if the normalised answer is the label or a synonym (`contains`: has it as whole words).

    >>> classify_reward("British Shorthair", ("british shorthair",), options=RewardOptions())
    {'accuracy': 1.0}
    >>> classify_reward("a", ("abyssinian",), options=RewardOptions(match="contains"))  # the loophole, closed
    {'accuracy': 0.0}
    """
    said = normalize_label(answer) if answer else ""
    if not said:
        return {"accuracy": 0.0}
    if options.match == "exact":
        return {"accuracy": 1.0 if said in truth else 0.0}
    padded = f" {said} "
    return {"accuracy": 1.0 if any(f" {name} " in padded for name in truth) else 0.0}


@register("count")
def count_reward(answer: str | None, truth: int, **_: Any) -> dict[str, float]:
    """accuracy 1 if the first number in the answer is the count.

    >>> count_reward("There are twelve, maybe 13", 12)
    {'accuracy': 1.0}
    """
    return {"accuracy": 1.0 if answer is not None and parse_count(answer) == truth else 0.0}


@register("choice")
def choice_reward(answer: str | None, truth: str, **_: Any) -> dict[str, float]:
    """accuracy 1 if the first standalone option letter is the right one.

    >>> choice_reward("(B) or maybe C", "B"), choice_reward("C, B", "B")
    ({'accuracy': 1.0}, {'accuracy': 0.0})
    """
    return {"accuracy": 1.0 if answer is not None and parse_choice(answer) == truth else 0.0}


@register("detect")
def detect_reward(
    answer: str | None, truth: list[Box], *, coord_map: CoordMap, options: RewardOptions, **_: Any
) -> dict[str, float]:
    """iou and confidence of a detection list against pixel boxes (see the module docstring).

    Predictions are sorted by confidence (stable); each takes the unmatched ground-truth box
    of highest IoU and matches when IoU >= iou_threshold. Invalid items (non-finite numbers,
    no area inside the image) count as unmatched predictions with confidence reward 0;
    exact duplicate boxes count once.

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


@register("ground")
def ground_reward(
    answer: str | None, truth: Box, *, coord_map: CoordMap, options: RewardOptions, **_: Any
) -> dict[str, float]:
    """iou of the first box in the answer with the target; `giou`: (GIoU + 1) / 2. No box: 0.

    >>> ground_reward("(0,0),(500,1000)", (0, 0, 100, 100), coord_map=CoordMap.for_model("rel1000", (100, 100)),
    ...               options=RewardOptions())  # (0,0,50,100) inside the target: 5000 / 10000
    {'iou': 0.5}
    """
    box = parse_ground_box(answer) if answer is not None else None
    pixels = coord_map.box(box) if box is not None else None
    if pixels is None:
        return {"iou": 0.0}
    if options.ground_metric == "giou":
        return {"iou": (box_giou(pixels, truth) + 1.0) / 2.0}
    return {"iou": box_iou(pixels, truth)}


@register("point")
def point_reward(
    answer: str | None, truth: Box, *, coord_map: CoordMap, options: RewardOptions, **_: Any
) -> dict[str, float]:
    """point: fraction of the answer's points inside the target box (edges included);
    `distance`: mean exp(-d / point_sigma), d = distance to the box / its diagonal. No points: 0.

    >>> point_reward("[(50, 50), (200, 50)]", (0, 0, 100, 100), coord_map=CoordMap.for_model("pixel"),
    ...              options=RewardOptions())
    {'point': 0.5}
    """
    points = parse_points(answer) if answer is not None else []
    if not points:
        return {"point": 0.0}
    x1, y1, x2, y2 = truth
    diagonal = math.hypot(x2 - x1, y2 - y1)
    distance = options.point_metric == "distance" and diagonal > 0
    total = 0.0
    for point in points:
        pixel = coord_map.point(point)
        if pixel is None:
            continue
        x, y = pixel
        if not distance:
            total += 1.0 if x1 <= x <= x2 and y1 <= y <= y2 else 0.0
        else:
            dx = max(x1 - x, 0.0, x - x2)
            dy = max(y1 - y, 0.0, y - y2)
            total += math.exp(-math.hypot(dx, dy) / diagonal / options.point_sigma)
    return {"point": total / len(points)}


# ----------------------------------------------------------------------------- entry points


def _scorer(
    task: str,
    solution: Any,
    image_size: Sequence[float] | None,
    resized_size: Sequence[float] | None,
    options: RewardOptions | None,
) -> Callable[[str], dict[str, float]]:
    """Parse the ground truth and the coordinate map once; score many completions."""
    reward = get_reward(task)
    options = options or DEFAULT_OPTIONS
    truth = parse_solution(task, solution, image_size=image_size)
    coord_map = CoordMap.for_model(options.coords, image_size, resized_size) if task in BOX_TASKS else None
    weights = {name: options.weight(name) for name in ("format", *COMPONENTS[task])}
    format_weight = weights["format"]

    def one(completion: str) -> dict[str, float]:
        if not isinstance(completion, str):
            raise TypeError(f"completion must be a string; got {type(completion).__name__}")
        scores = {"format": format_reward(completion)}
        total = format_weight * scores["format"]
        for name, value in reward(extract_answer(completion), truth, coord_map=coord_map, options=options).items():
            value = min(max(value, 0.0), 1.0) if value == value else 0.0  # in range already; NaN impossible
            scores[name] = value
            total += weights[name] * value
        scores["total"] = total
        return scores

    return one


def score(
    task: str,
    completion: str,
    solution: Any,
    *,
    image_size: Sequence[float] | None = None,
    resized_size: Sequence[float] | None = None,
    options: RewardOptions | None = None,
) -> dict[str, float]:
    """The reward of one completion: `format`, the task's components, and `total`.

    `solution` takes any form `answers.parse_solution` reads (pixel boxes, labels, counts,
    letters, or Visual-RFT's own `<answer>…</answer>` strings). `image_size` (width,
    height) is needed to map the model's 0-1000 coordinates to pixels; `resized_size`
    with `coords: resized`. Raises ValueError for an unknown task or unreadable ground
    truth; never for anything the completion contains.

    >>> completion = "<think>a bus</think><answer>[{'Position': [100, 200, 300, 400], 'Confidence': 0.9}]</answer>"
    >>> score("detect", completion, [[64, 160, 192, 320]], image_size=(640, 800))
    {'format': 1.0, 'iou': 1.0, 'confidence': 0.9, 'total': 2.9}
    """
    return _scorer(task, solution, image_size, resized_size, options)(completion)


def score_batch(
    task: str,
    completions: Sequence[str],
    solution: Any,
    *,
    image_size: Sequence[float] | None = None,
    resized_size: Sequence[float] | None = None,
    options: RewardOptions | None = None,
) -> list[dict[str, float]]:
    """`score` for a group of completions of one prompt (the ground truth is parsed once)."""
    one = _scorer(task, solution, image_size, resized_size, options)
    return [one(completion) for completion in completions]


def parse_prediction(
    task: str,
    completion: str,
    *,
    image_size: Sequence[float] | None,
    resized_size: Sequence[float] | None = None,
    options: RewardOptions | None = None,
) -> Any:
    """The answer as the reward reads it, in pixels, for COCO predictions and drawings.

    detect: [(box_xyxy, confidence)] valid boxes, clipped, deduplicated, most confident
    first (confidence clipped to [0, 1]); ground: a box or None; point: [(x, y)];
    classify: the normalised answer or None; count: int or None; choice: letter or None.

    >>> parse_prediction("ground", "<think>.</think><answer>(100,0),(500,500)</answer>", image_size=(640, 480))
    (64.0, 0.0, 320.0, 240.0)
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    options = options or DEFAULT_OPTIONS
    answer = extract_answer(completion)
    if task == "classify":
        return normalize_label(answer) if answer is not None else None
    if task == "count":
        return parse_count(answer) if answer is not None else None
    if task == "choice":
        return parse_choice(answer) if answer is not None else None
    coord_map = CoordMap.for_model(options.coords, image_size, resized_size)
    if task == "ground":
        box = parse_ground_box(answer) if answer is not None else None
        return coord_map.box(box) if box is not None else None
    if task == "point":
        pixels = [coord_map.point(p) for p in parse_points(answer)] if answer is not None else []
        return [p for p in pixels if p is not None]
    items = (parse_detections(answer) if answer is not None else None) or []
    valid = [(coord_map.box(box), conf) for box, conf in items if box is not None]
    valid = sorted(((box, conf) for box, conf in valid if box is not None), key=lambda item: -item[1])
    detections, seen = [], set()
    for box, conf in valid:
        if box not in seen:
            seen.add(box)
            detections.append((box, min(max(conf, 0.0), 1.0)))
    return detections
