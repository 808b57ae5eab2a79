"""A reward component added to a built-in task, as a vrft-lite plugin
(`--plugin examples/brevity_reward.py`): classification completions earn `brevity` for
reasoning that stays under 400 characters, summed into the total with reward.weights.brevity.
"""

from __future__ import annotations

from typing import Any

from visualrft_lite.tasks import task_reward

LIMIT = 400


@task_reward("classify", "brevity")
def brevity(answer: str | None, truth: Any, *, completion: str, **_: Any) -> float:
    """1 up to LIMIT characters, falling linearly to 0 at twice that."""
    return min(1.0, max(0.0, 2.0 - len(completion) / LIMIT))
