"""How many detect completions the reward scores per second on one core.

Realistic completions: a ~300-character <think> block and 1-10 boxes as the prompt asks
(Python-literal dicts, 0-1000 coordinates), against 1-10 ground-truth boxes of a 640x480
image; predictions are jittered copies of the truth plus an occasional false positive.
Also one row for each slow path (JSON with reversed keys, a truncated list). Target:
>= 50,000 completions per CPU second averaged over 1-10 boxes. Not a test: it prints a table.

    python bench/rewards_speed.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from visualrft_lite.rewards import score_batch

WIDTH, HEIGHT = 640, 480
THINK = (
    "<think>The image shows a street with several vehicles. I look for every bus: there is a large "
    "red double-decker on the left, partly hidden by a tree, and another one further back near the "
    "traffic light. I estimate their boxes in 0-1000 coordinates and give a confidence for each, "
    "lower for the occluded one.</think>\n"
)


def make_case(rng: random.Random, n_boxes: int, style: str) -> tuple[list[str], list[list[float]]]:
    truth_rel = []
    for _ in range(n_boxes):
        x1, y1 = rng.randint(0, 800), rng.randint(0, 800)
        truth_rel.append([x1, y1, x1 + rng.randint(40, 199), y1 + rng.randint(40, 199)])
    truth = [[b[0] * WIDTH / 1000, b[1] * HEIGHT / 1000, b[2] * WIDTH / 1000, b[3] * HEIGHT / 1000] for b in truth_rel]
    completions = []
    for _ in range(8):  # one group of G = 8
        items = []
        for b in truth_rel:
            box = [v + rng.randint(-15, 15) for v in b]
            items.append({"Position": box, "Confidence": round(rng.uniform(0.3, 1.0), 2)})
        if rng.random() < 0.3:
            items.append({"Position": [10, 10, 90, 120], "Confidence": round(rng.uniform(0.05, 0.5), 2)})
        if style == "prompt":
            answer = repr(items)
        elif style == "json-reversed":
            answer = json.dumps([{"confidence": i["Confidence"], "position": i["Position"]} for i in items])
        else:  # truncated mid-item
            answer = repr(items)[:-25]
        completions.append(f"{THINK}<answer>{answer}</answer>")
    return completions, truth


def rate(cases: list[tuple[list[str], list[list[float]]]], seconds: float) -> float:
    """Completions per CPU second of this process (one core; other load on the machine does
    not count against it), timing whole groups as training scores them."""
    n, start = 0, time.process_time()
    while True:
        for completions, truth in cases:
            score_batch("detect", completions, truth, image_size=(WIDTH, HEIGHT))
            n += len(completions)
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per row")
    args = parser.parse_args()
    rng = random.Random(0)
    print(f"{'boxes':>6} {'style':<14} {'completions/s':>14} {'µs each':>8}")
    all_cases = []
    for n_boxes in range(1, 11):
        cases = [make_case(rng, n_boxes, "prompt") for _ in range(50)]
        all_cases += cases
        r = rate(cases, args.seconds)
        print(f"{n_boxes:>6} {'prompt':<14} {r:>14,.0f} {1e6 / r:>8.1f}")
    for style in ("json-reversed", "truncated"):
        cases = [make_case(rng, rng.randint(1, 10), style) for _ in range(200)]
        r = rate(cases, args.seconds)
        print(f"{'1-10':>6} {style:<14} {r:>14,.0f} {1e6 / r:>8.1f}")
    r = rate(all_cases, args.seconds * 4)
    print(f"{'1-10':>6} {'prompt, mixed':<14} {r:>14,.0f} {1e6 / r:>8.1f}   (target >= 50,000/s)")


if __name__ == "__main__":
    main()
