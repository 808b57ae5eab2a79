"""A yes/no question about an image, as a vrft-lite plugin (`--plugin examples/yes_no_task.py`).

The task is one class: its prompt, how its ground truth and answers are read, its SFT answer.
Its reward is a plain function registered under a component name. Everything else (training,
eval's accuracy, predict, the reward tool, data show, samples) comes from vrft-lite.

    vrft-lite train --plugin examples/yes_no_task.py --preset demo \\
        --set data.source=jsonl --set data.path=questions.jsonl --set data.task=yesno

with questions.jsonl lines such as

    {"image": "img/1.png", "task": "yesno", "query": "Is there a circle in the image?", "solution": "yes"}
"""

from __future__ import annotations

from typing import Any

from visualrft_lite.answers import parse_yes_no
from visualrft_lite.prompts import with_tail
from visualrft_lite.tasks import PromptField, Task, register_task, task_reward


@register_task
class YesNo(Task):
    """Answer a yes/no question about the image (accuracy)"""

    name = "yesno"
    solution_help = '"yes" or "no" (or true / false)'
    templates = {"yesno": with_tail("{query}\n", "yes or no")}
    fields = (PromptField("query", "the yes/no question", required=True, example='"Is the door open?"'),)
    label_answers = True  # the health alerts watch for "yes" to everything

    def parse_truth(self, solution: Any, *, image_size: Any = None) -> str:
        said = solution if isinstance(solution, bool) else parse_yes_no(solution) if isinstance(solution, str) else None
        if said is None:
            raise ValueError(f"yesno solution must be yes or no; got {solution!r}")
        return "yes" if said else "no"

    def parse_answer(self, answer: str | None, coord_map: Any = None) -> str | None:
        said = parse_yes_no(answer) if answer is not None else None
        return None if said is None else "yes" if said else "no"

    def think(self, record: Any) -> str:
        return "I look for what the question asks about."

    def sft_answer(self, record: Any, to_model_box: Any) -> str:
        return self.parse_truth(record.solution)


@task_reward("yesno", "accuracy")
def yes_no_accuracy(answer: str | None, truth: str, **_: Any) -> float:
    """1 if the answer starts with the right yes or no."""
    said = parse_yes_no(answer) if answer is not None else None
    return 1.0 if said is not None and ("yes" if said else "no") == truth else 0.0
