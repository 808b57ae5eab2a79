"""count: how many objects of a kind the image holds (Reason-RFT's visual counting).

Truth: 3, "3" or "<answer>three</answer>" -> int. Answer: the first number (digits, or a word up
to twenty). Reward: `accuracy`, the count is right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from visualrft_lite.answers import answer_or_text, parse_count
from visualrft_lite.prompts import with_tail
from visualrft_lite.tasks.base import PromptField, Task, register_task, task_reward

if TYPE_CHECKING:
    from visualrft_lite.answers import CoordMap
    from visualrft_lite.data.records import Record


@register_task
class Count(Task):
    """Count the objects a question names (accuracy)"""

    name = "count"
    solution_help = 'an integer'
    label_answers = True
    templates = {"count": with_tail("{query}\n", "number")}
    fields = (PromptField("query", "the counting question", required=True, example='"How many cars are there?"'),)

    def parse_truth(self, solution: Any, *, image_size: Sequence[float] | None = None) -> int:
        what = "count solution"
        if isinstance(solution, bool):
            raise ValueError(f"{what} must be an integer; got {solution!r}")
        if isinstance(solution, int):
            return solution
        if isinstance(solution, float) and solution.is_integer():
            return int(solution)
        if isinstance(solution, str) and (count := parse_count(answer_or_text(solution))) is not None:
            return count
        raise ValueError(f"{what} must be an integer; got {solution!r}")

    def parse_answer(self, answer: str | None, coord_map: CoordMap | None = None) -> int | None:
        return parse_count(answer) if answer is not None else None

    def think(self, record: Record) -> str:
        return "I find each matching object in the image and count them."

    def sft_answer(self, record: Record, to_model_box: Callable[..., Any]) -> str:
        return str(int(record.solution))



@task_reward("count", "accuracy")
def count_reward(answer: str | None, truth: int, **_: Any) -> float:
    """1 if the first number in the answer is the count.

    >>> count_reward("There are twelve, maybe 13", 12)
    1.0
    """
    return 1.0 if answer is not None and parse_count(answer) == truth else 0.0
