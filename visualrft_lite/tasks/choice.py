"""choice: a multiple-choice question about the image (Reason-RFT's structure perception).

Truth: "B", "(B)" or "<answer>B</answer>" -> one upper-case letter. Answer: the first standalone
option letter. Reward: `accuracy`, the letter is right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from visualrft_lite.answers import answer_or_text, parse_choice
from visualrft_lite.prompts import with_tail
from visualrft_lite.tasks.base import PromptField, Task, register_task, task_reward

if TYPE_CHECKING:
    from visualrft_lite.answers import CoordMap
    from visualrft_lite.data.records import Record


@register_task
class Choice(Task):
    """Pick the option letter that answers a question (accuracy)"""

    name = "choice"
    solution_help = 'an option letter ("B")'
    label_answers = True
    # `options` carries its own trailing newline, so a query that already lists them renders cleanly.
    templates = {"choice": with_tail("{query}\n{options}", "option letter")}
    fields = (
        PromptField("query", "the question", required=True, example='"Which shape is red? A. circle B. star"'),
        PromptField("options", "the options, listed as A. ..., B. ... under the question", is_list=True),
    )

    def parse_truth(self, solution: Any, *, image_size: Sequence[float] | None = None) -> str:
        letter = parse_choice(answer_or_text(solution)) if isinstance(solution, str) else None
        if letter is None:
            raise ValueError(f"choice solution must be an option letter such as 'B'; got {solution!r}")
        return letter

    def parse_answer(self, answer: str | None, coord_map: CoordMap | None = None) -> str | None:
        return parse_choice(answer) if answer is not None else None

    def think(self, record: Record) -> str:
        return "I compare the image with each option."

    def sft_answer(self, record: Record, to_model_box: Callable[..., Any]) -> str:
        return str(record.solution).strip()



@task_reward("choice", "accuracy")
def choice_reward(answer: str | None, truth: str, **_: Any) -> float:
    """1 if the first standalone option letter is the right one.

    >>> choice_reward("(B) or maybe C", "B"), choice_reward("C, B", "B")
    (1.0, 0.0)
    """
    return 1.0 if answer is not None and parse_choice(answer) == truth else 0.0
