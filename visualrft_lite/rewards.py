"""Verifiable rewards: `format` plus the task's components, as pure functions of (completion,
ground truth); the components themselves are each task's (`visualrft_lite/tasks/`).

Stdlib only (no torch, no numpy): importable and testable in milliseconds. Training,
evaluation and `vrft-lite reward` all score through `Scorer`, so the reward and the metric
can never drift apart. Every component lies in [0, 1] and is finite for any input string;
`total` is their weighted sum (reward.weights).

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

import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from visualrft_lite.answers import COORDS, CoordMap, box_giou, box_iou, extract_answer
from visualrft_lite.errors import did_you_mean

if TYPE_CHECKING:
    from visualrft_lite.tasks import Task

__all__ = ["COMPONENTS", "REWARDS", "RewardOptions", "Scorer", "box_giou", "box_iou", "format_reward",
           "parse_prediction", "score", "score_batch"]


def _one_of(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"reward.{name} must be one of {', '.join(choices)}; got {value!r}")


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"reward.{name} must be a finite number; got {value!r}")
    return float(value)


@dataclass(frozen=True)
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
        from visualrft_lite.tasks import all_components

        _one_of(self.coords, "coords", (*COORDS, "auto"))
        object.__setattr__(self, "iou_threshold", _number(self.iou_threshold, "iou_threshold"))
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"reward.iou_threshold must be in (0, 1]; got {self.iou_threshold}")
        _one_of(self.iou_denominator, "iou_denominator", ("max", "pred"))
        _one_of(self.match, "match", ("exact", "contains"))
        _one_of(self.ground_metric, "ground_metric", ("iou", "giou"))
        _one_of(self.point_metric, "point_metric", ("inside", "distance"))
        object.__setattr__(self, "point_sigma", _number(self.point_sigma, "point_sigma"))
        if self.point_sigma <= 0:
            raise ValueError(f"reward.point_sigma must be > 0; got {self.point_sigma}")
        if not isinstance(self.weights, dict):
            raise ValueError(f"reward.weights must be a mapping of component to weight; got {self.weights!r}")
        weights = {}
        known = all_components()
        for name, weight in self.weights.items():
            if name not in known:
                hint = did_you_mean(name, known, otherwise=f" (components: {', '.join(known)})")
                raise ValueError(f"reward.weights: unknown component {name!r}{hint}")
            weights[name] = _number(weight, f"weights.{name}")
            if not 0.0 <= weights[name] <= 1000.0:  # bounded so that total can never overflow
                raise ValueError(f"reward.weights.{name} must be in [0, 1000]; got {weight}")
        object.__setattr__(self, "weights", weights)

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


@functools.cache
def default_options() -> RewardOptions:
    """RewardOptions() (built on first use: its weights are checked against the registered tasks)."""
    return RewardOptions()

# ----------------------------------------------------------------------------- the rewards

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


# ----------------------------------------------------------------------------- entry points


class Scorer:
    """One record's ground truth, parsed once, scoring and reading any number of completions.

    Training builds one per prompt and scores its G completions with it; `score`, `score_batch`
    and `parse_prediction` are the one-off forms. Raises ValueError for an unknown task or
    unreadable ground truth; never for anything a completion contains.
    """

    def __init__(self, task: str, solution: Any, *, image_size: Sequence[float] | None = None,
                 resized_size: Sequence[float] | None = None, options: RewardOptions | None = None) -> None:
        from visualrft_lite.tasks import get_task

        self.task: Task = get_task(task)
        self.options = options or default_options()
        self.truth = self.task.parse_truth(solution, image_size=image_size)
        self.coord_map = (CoordMap.for_model(self.options.coords, image_size, resized_size)
                          if self.task.coordinates else None)
        self.weights = {name: self.options.weight(name) for name in ("format", *self.task.components)}

    def score(self, completion: str) -> dict[str, float]:
        """`format`, the task's components (each clipped to [0, 1], NaN to 0) and their weighted `total`."""
        if not isinstance(completion, str):
            raise TypeError(f"completion must be a string; got {type(completion).__name__}")
        scores = {"format": format_reward(completion)}
        total = self.weights["format"] * scores["format"]
        components = self.task.reward(extract_answer(completion), self.truth, coord_map=self.coord_map,
                                      options=self.options, completion=completion)
        for name, value in components.items():
            value = min(max(value, 0.0), 1.0) if value == value else 0.0  # in range already; NaN impossible
            scores[name] = value
            total += self.weights[name] * value
        scores["total"] = total
        return scores

    def parse(self, completion: str) -> Any:
        """The answer as the reward reads it, in pixels where it has coordinates."""
        return self.task.parse_answer(extract_answer(completion), self.coord_map)


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

    `solution` takes any form the task's `parse_truth` reads (pixel boxes, labels, counts,
    letters, or Visual-RFT's own `<answer>…</answer>` strings). `image_size` (width,
    height) is needed to map the model's 0-1000 coordinates to pixels; `resized_size`
    with `coords: resized`. Raises ValueError for an unknown task or unreadable ground
    truth; never for anything the completion contains.

    >>> completion = "<think>a bus</think><answer>[{'Position': [100, 200, 300, 400], 'Confidence': 0.9}]</answer>"
    >>> score("detect", completion, [[64, 160, 192, 320]], image_size=(640, 800))
    {'format': 1.0, 'iou': 1.0, 'confidence': 0.9, 'total': 2.9}
    """
    return Scorer(task, solution, image_size=image_size, resized_size=resized_size, options=options).score(completion)


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
    scorer = Scorer(task, solution, image_size=image_size, resized_size=resized_size, options=options)
    return [scorer.score(completion) for completion in completions]


def parse_prediction(
    task: str,
    completion: str,
    *,
    image_size: Sequence[float] | None,
    resized_size: Sequence[float] | None = None,
    options: RewardOptions | None = None,
) -> Any:
    """The answer as the reward reads it (the task's `parse_answer`), in pixels, for COCO
    predictions and drawings: detect [(box_xyxy, confidence)] most confident first; ground a
    box or None; point [(x, y)]; classify the normalised answer; count an int; choice a letter.

    >>> parse_prediction("ground", "<think>.</think><answer>(100,0),(500,500)</answer>", image_size=(640, 480))
    (64.0, 0.0, 320.0, 240.0)
    """
    from visualrft_lite.tasks import get_task

    target = get_task(task)
    options = options or default_options()
    coord_map = CoordMap.for_model(options.coords, image_size, resized_size) if target.coordinates else None
    return target.parse_answer(extract_answer(completion), coord_map)


class _TaskView(Mapping[str, Any]):
    """A read-only view of the task registry: task name -> one attribute of the task."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __getitem__(self, name: str) -> Any:
        from visualrft_lite.tasks import TASKS

        if name not in TASKS:
            raise KeyError(name)
        return getattr(TASKS.get(name), self.attribute)

    def __iter__(self) -> Iterator[str]:
        from visualrft_lite.tasks import TASKS

        return iter(TASKS)

    def __len__(self) -> int:
        from visualrft_lite.tasks import TASKS

        return len(TASKS)


REWARDS: Mapping[str, Callable[..., dict[str, float]]] = _TaskView("reward")
"""Task name -> its reward: (answer, truth, *, coord_map, options) -> {component: value}."""
COMPONENTS: Mapping[str, tuple[str, ...]] = _TaskView("components")
"""Task name -> its reward components besides `format`."""
