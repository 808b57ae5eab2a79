"""The tasks: one module per task, one registry (`TASKS`) that everything else reads.

    classify   name the class of the object                 accuracy
    detect     every object of a category, boxes + scores   COCO mAP
    ground     the box an instruction refers to             mIoU
    count      how many objects a question names            accuracy
    choice     the option letter that answers a question    accuracy
    point      points on the target an instruction names    points inside

A task owns its prompt, its truth and answer parsing, its reward components, its metrics, its
SFT target and its drawings (`base.Task`). Config validation, the CLI's `--task` choices and
help, `reward`, `eval`, `predict`, `samples` and `data show` all go through `get_task`; a plugin
file (`--plugin FILE.py`, `visualrft_lite.plugins`) registers more with the same decorators.
"""

from __future__ import annotations

from visualrft_lite.tasks.base import (
    TASKS,
    PromptField,
    Scored,
    TargetBox,
    Task,
    all_components,
    get_task,
    mean_of,
    register_task,
    task_names,
    task_reward,
)
from visualrft_lite.tasks import classify, detect, ground, count, choice, point  # noqa: E402,F401  (registers them)

__all__ = ["TASKS", "PromptField", "Scored", "TargetBox", "Task", "all_components", "get_task", "mean_of",
           "register_task", "task_names", "task_reward"]
