"""ground: the box of the region an instruction refers to (LISA's reasoning grounding).

Truth: one pixel box, or a string holding one 0-1000 box. Answer: the first box, written
`(x1,y1),(x2,y2)` or `[x1, y1, x2, y2]`, in pixels. Reward: `iou` (or (GIoU + 1) / 2 with
reward.ground_metric: giou). Metrics: mean IoU and the fraction of answers with IoU > 0.5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from visualrft_lite.answers import Box, box_giou, box_iou, parse_ground_box
from visualrft_lite.rewards import RewardOptions
from visualrft_lite.tasks.base import PromptField, Scored, TargetBox, mean_of, register_task, task_reward

if TYPE_CHECKING:
    from PIL import Image

    from visualrft_lite.answers import CoordMap
    from visualrft_lite.data.records import Record


@register_task
class Ground(TargetBox):
    """Box the region an instruction refers to (mIoU)"""

    name = "ground"
    solution_help = 'one pixel box [x1, y1, x2, y2]'
    templates = {"ground": (
        "Output the bounding box in the image corresponding to the instruction: {query} "
        "Output the thinking process in <think> </think> and your grounding box. "
        'Following "<think> thinking process </think>\n<answer>(x1,y1),(x2,y2)</answer>" format.'
    )}
    fields = (PromptField("query", "the instruction", required=True, example='"the cup nearest the laptop"'),)
    accuracy = "iou"
    headline = "mIoU"

    def parse_answer(self, answer: str | None, coord_map: CoordMap | None) -> Box | None:
        box = parse_ground_box(answer) if answer is not None else None
        return coord_map.box(box) if box is not None and coord_map is not None else None

    def think(self, record: Record) -> str:
        return "I find the region that the instruction refers to and locate it."

    def sft_answer(self, record: Record, to_model_box: Callable[[Sequence[float]], list[int]]) -> str:
        x1, y1, x2, y2 = to_model_box(record.solution)
        return f"({x1},{y1}),({x2},{y2})"

    def answer_json(self, parsed: Box | None) -> list[float] | None:
        return None if parsed is None else [round(v, 2) for v in parsed]

    def answer_text(self, parsed: Box | None) -> str:
        return "no box" if parsed is None else "[" + ", ".join(f"{v:.0f}" for v in parsed) + "]"

    def describe(self, parsed: Box | None, fields: dict[str, Any]) -> list[str]:
        if parsed is None:
            return ["  box: none"]
        return [f"  box (pixels x1, y1, x2, y2): [{', '.join(f'{v:.0f}' for v in parsed)}]"]

    def draw_answer(self, image: Image.Image, parsed: Box | None, *, label: str | None = None,
                    colour: tuple[int, int, int] | None = None) -> Image.Image:
        from visualrft_lite.draw import PALETTE, Canvas

        canvas = Canvas.of(image)
        if parsed is not None:
            canvas.box(parsed, colour or PALETTE[0], label or "target")
        return canvas.image

    def row(self, scored: Scored) -> dict[str, Any]:
        return {"iou": self._iou(scored)}

    def metrics(self, scored: Sequence[Scored]) -> dict[str, Any]:
        """Plain IoU of the parsed box (whatever reward.ground_metric trains with); no box = 0."""
        ious = [self._iou(s) for s in scored]
        return {"mIoU": mean_of(ious), "iou_above_0.5": mean_of(1.0 if v > 0.5 else 0.0 for v in ious)}

    def metric_lines(self, metrics: dict[str, Any]) -> list[tuple[str, float | None] | str]:
        return [("mIoU", metrics["mIoU"]), ("IoU > 0.5", metrics["iou_above_0.5"])]

    @staticmethod
    def _iou(scored: Scored) -> float:
        return box_iou(scored.parsed, scored.truth) if scored.parsed is not None else 0.0


@task_reward("ground", "iou")
def ground_reward(answer: str | None, truth: Box, *, coord_map: CoordMap, options: RewardOptions, **_: Any) -> float:
    """IoU of the first box in the answer with the target; `giou`: (GIoU + 1) / 2. No box: 0.

    >>> from visualrft_lite.answers import CoordMap
    >>> ground_reward("(0,0),(500,1000)", (0, 0, 100, 100), coord_map=CoordMap.for_model("rel1000", (100, 100)),
    ...               options=RewardOptions())  # (0,0,50,100) inside the target: 5000 / 10000
    0.5
    """
    box = parse_ground_box(answer) if answer is not None else None
    pixels = coord_map.box(box) if box is not None else None
    if pixels is None:
        return 0.0
    if options.ground_metric == "giou":
        return (box_giou(pixels, truth) + 1.0) / 2.0
    return box_iou(pixels, truth)
