"""point: points on the target an instruction names (RoboRefer's spatial referring).

Truth: the target's pixel box. Answer: every `(x, y)` or `[x, y]`, in pixels. Reward: `point`,
the fraction of points inside the box (or, reward.point_metric: distance, a score that decays
with the distance to it). Metric: the same fraction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from visualrft_lite.answers import Box, Point, parse_points
from visualrft_lite.prompts import with_tail
from visualrft_lite.rewards import RewardOptions
from visualrft_lite.tasks.base import PromptField, TargetBox, register_task, task_reward

if TYPE_CHECKING:
    from PIL import Image

    from visualrft_lite.answers import CoordMap
    from visualrft_lite.data.records import Record


@register_task
class PointTask(TargetBox):
    """Mark points on the target an instruction names (points inside the target)"""

    name = "point"
    solution_help = "the target's pixel box [x1, y1, x2, y2]"
    templates = {"point": with_tail("{query}\nOutput the points as [(x1, y1), ...] ({point_range}).\n",
                                    "[(x1, y1), ...]")}
    fields = (PromptField("query", "the instruction", required=True, example='"the handle of the mug"'),)
    accuracy = "point"
    headline = "point"

    def parse_answer(self, answer: str | None, coord_map: CoordMap | None) -> list[Point]:
        if answer is None or coord_map is None:
            return []
        pixels = [coord_map.point(p) for p in parse_points(answer)]
        return [p for p in pixels if p is not None]

    def think(self, record: Record) -> str:
        return "I find the target and mark it."

    def sft_answer(self, record: Record, to_model_box: Callable[[Sequence[float]], list[int]]) -> str:
        sol = record.solution
        cx, cy = (float(sol[0]) + float(sol[2])) / 2, (float(sol[1]) + float(sol[3])) / 2  # pixels, rounded once
        x, y, _, _ = to_model_box([cx, cy, cx, cy])
        return f"[({x}, {y})]"

    def answer_json(self, parsed: list[Point]) -> list[list[float]]:
        return [[round(x, 2), round(y, 2)] for x, y in parsed]

    def answer_text(self, parsed: list[Point]) -> str:
        return f"{len(parsed)} point{'s' if len(parsed) != 1 else ''}"

    def describe(self, parsed: list[Point], fields: dict[str, Any]) -> list[str]:
        return [f"  {self.answer_text(parsed)} (pixels x, y): " + ", ".join(f"({x:.0f}, {y:.0f})" for x, y in parsed)]

    def draw_answer(self, image: Image.Image, parsed: list[Point], *, label: str | None = None,
                    colour: tuple[int, int, int] | None = None) -> Image.Image:
        from visualrft_lite.draw import PALETTE, Canvas

        canvas = Canvas.of(image)
        for k, point in enumerate(parsed):
            canvas.ring(point, colour or PALETTE[k % len(PALETTE)])
        return canvas.image

    def metric_lines(self, metrics: dict[str, Any]) -> list[tuple[str, float | None] | str]:
        return [("points inside the target", metrics["point"])]


@task_reward("point", "point")
def point_reward(answer: str | None, truth: Box, *, coord_map: CoordMap, options: RewardOptions, **_: Any) -> float:
    """Fraction of the answer's points inside the target box (edges included); `distance`: mean
    exp(-d / point_sigma), d = distance to the box / its diagonal. No points: 0.

    >>> from visualrft_lite.answers import CoordMap
    >>> point_reward("[(50, 50), (200, 50)]", (0, 0, 100, 100), coord_map=CoordMap.for_model("pixel"),
    ...              options=RewardOptions())
    0.5
    """
    points = parse_points(answer) if answer is not None else []
    if not points:
        return 0.0
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
    return total / len(points)
