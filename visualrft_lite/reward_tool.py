"""`vrft-lite reward`: score completions from a JSONL file with the training reward.

The command is the reward's contract: what it prints is exactly what training optimises.
`reward_help` is the command's help text, its task list read from the registry. Pure: stdlib only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from visualrft_lite.answers import check_size
from visualrft_lite.modeling.families import FAMILIES
from visualrft_lite.prompts import after_prefix
from visualrft_lite.rewards import RewardOptions, score
from visualrft_lite.tasks import TASKS

_KEYS = ("task", "completion", "solution", "image_size", "resized_size")


def _size(value: Any, key: str) -> tuple[float, float] | None:
    return None if value is None else check_size(value, key)


def family_reading(family: str | None, coords: str | None) -> tuple[str, str]:
    """(coords, template prefix) to score completions as `family` writes them: its box
    convention unless `coords` is given, and what its chat template's generation prompt
    already opened ("<think>\n" for Qwen3.5, which the completion continues)."""
    if family is None:
        return coords or "rel1000", ""
    spec = FAMILIES[family]
    return coords or spec.coords, "<think>\n" if spec.thinking_template else ""


def score_line(line: str, options: RewardOptions, prefix: str = "") -> dict[str, float]:
    """One input line -> its reward components; ValueError with a one-line reason otherwise."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object with keys {', '.join(_KEYS[:4])}; got {type(record).__name__}")
    missing = [key for key in ("task", "completion", "solution") if key not in record]
    if missing:
        raise ValueError(f"missing key {', '.join(repr(k) for k in missing)}")
    task = record["task"]
    TASKS.get(task)  # an unknown task is a ValueError naming the tasks
    if not isinstance(record["completion"], str):
        raise ValueError(f"completion must be a string; got {json.dumps(record['completion'])[:80]}")
    return score(
        task,
        prefix + after_prefix(prefix, record["completion"]) if prefix else record["completion"],
        record["solution"],
        image_size=_size(record.get("image_size"), "image_size"),
        resized_size=_size(record.get("resized_size"), "resized_size"),
        options=options,
    )


def score_jsonl(lines: Iterable[str | bytes], out: TextIO, err: TextIO, options: RewardOptions,
                prefix: str = "") -> tuple[int, int]:
    """Score every line; write exactly one JSON object per input line to `out` (its reward
    components, or `{"error": reason, "line": N}`) and one `line N: reason` per failed line to
    `err`, so output line N always belongs to input line N. Returns (scored, failed)."""
    scored = failed = 0
    for number, line in enumerate(lines, start=1):
        try:
            if isinstance(line, bytes):  # the command reads bytes so one bad line cannot end the file
                try:
                    line = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"not UTF-8 text (byte {e.start + 1})") from None
            if not line.strip():
                raise ValueError("blank line")
            result = score_line(line, options, prefix)
        except (ValueError, TypeError, RecursionError) as e:  # a bad line never stops the others
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            out.write(json.dumps({"error": reason, "line": number}) + "\n")
            err.write(f"line {number}: {reason}\n")
            failed += 1
            continue
        out.write(json.dumps(result, allow_nan=False) + "\n")
        scored += 1
    return scored, failed


def reward_help() -> str:
    """The help text of `vrft-lite reward`, with every registered task's solution form and components."""
    tasks = "\n".join(f"  {e.name:<9} {e.value.solution_help}; scores {', '.join(e.value.components) or '-'}"
                      for e in TASKS.entries())
    return f"""Score completions with the training reward: one JSON object per line in, one out.

FILE is a JSONL file, or - for stdin. Each line holds the task, the completion, the ground
truth, and the image size [width, height] in pixels (needed for box tasks unless --coords
pixel; with --coords resized also "resized_size", the processor's size). --run RUN scores as
that training run did (its model's template, model.thinking, box convention and reward
section); --model ID|DIR as that checkpoint's template writes the prompt; --family as a model
family means it. A template that opened <think> puts it in front of each completion:

\b
  echo '{{"task": "classify", "completion": "<think>petals</think><answer>daisy</answer>", "solution": "daisy"}}' \\
    | vrft-lite reward -
  {{"format": 1.0, "accuracy": 1.0, "total": 2.0}}

Tasks, their solution forms and reward components (format is scored for every task; total
is the weighted sum):

\b
{tasks}

Output line N always answers input line N: a line that cannot be scored (blank, malformed, a
bad field) prints {{"error": "...", "line": N}} in its place, is reported on stderr with its
number, and the others are still scored (exit status 1). --plugin FILE.py adds its tasks.
"""
