"""`vrft-lite reward`: score completions from a JSONL file with the training reward.

The command is the reward's contract: what it prints is exactly what training optimises.
Pure: stdlib only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from visualrft_lite.answers import TASKS, check_size
from visualrft_lite.modeling.families import FAMILIES
from visualrft_lite.prompts import after_prefix
from visualrft_lite.rewards import RewardOptions, score

REWARD_HELP = """Score completions with the training reward: one JSON object per line in, one out.

FILE is a JSONL file, or - for stdin. Each line holds the task, the completion, the ground
truth, and the image size [width, height] in pixels (needed for detect, ground and point
unless --coords pixel; with --coords resized also "resized_size", the processor's size).
--family scores as a model family means it: Qwen2.5-VL's boxes are pixels of the resized
image, Qwen2-VL's, Qwen3-VL's and Qwen3.5's are 0-1000 relative, and a Qwen3.5 completion
continues the <think> its template opened:

\b
  {"task": "detect", "image_size": [640, 800], "solution": [[64, 160, 192, 320]],
   "completion": "<think>one bus</think><answer>[{'Position': [100, 200, 300, 400], 'Confidence': 0.9}]</answer>"}

prints

\b
  {"format": 1.0, "iou": 1.0, "confidence": 0.9, "total": 2.9}

Tasks and their solution forms: classify ("label" or {"label": ..., "synonyms": [...]}),
detect (a list of pixel boxes [x1, y1, x2, y2]; [] = no objects), ground and point (one
pixel box), count (an integer), choice (a letter). Visual-RFT's own solution strings
("<answer>...</answer>" with 0-1000 boxes) are accepted too. Output keys: format always;
accuracy for classify/count/choice; iou and confidence for detect; iou for ground; point
for point; total. Output line N always answers input line N: a line that cannot be scored
(blank, malformed, a bad field) prints {"error": "...", "line": N} in its place, is reported
on stderr with its number, and the others are still scored (exit status 1).
"""

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
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
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
