"""A shortened `make demo`: the demo preset, fewer GRPO steps, same code path.

The story the demo tells must come from the run: before training the tiny model never
follows the answer format; the SFT warm-up teaches it; under GRPO the held-out accuracy
and reward rise above the warm-up's (measured on test images the run never trains on).
"""

from __future__ import annotations

import json

import pytest
from helpers import invoke

from visualrft_lite.config import load_config


@pytest.mark.slow
def test_shortened_demo_reward_rises(tmp_path):
    out = tmp_path / "demo"
    result = invoke("train", "--preset", "demo", "--out", out, "--set", "train.steps=12")
    assert result.exit_code == 0, result.output[-2000:]
    rows = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["base", "sft", "grpo"]
    base, sft, grpo = rows
    assert base["format_rate"] == 0.0  # a random model does not write <think>/<answer>
    assert sft["format_rate"] >= 0.75  # the warm-up teaches the format
    assert grpo["accuracy"] > sft["accuracy"]  # GRPO improves on the warm-up...
    assert grpo["reward"] > sft["reward"]  # ...on images it never trained on
    assert "before training" in result.output and "after GRPO" in result.output  # the printed table
    assert (out / "curves.png").stat().st_size > 0
    answers = [json.loads(line) for line in (out / "heldout_answers.jsonl").read_text().splitlines()]
    assert [a["stage"] for a in answers] == ["base"] * base["n"] + ["sft"] * sft["n"] + ["grpo"] * grpo["n"]
    assert sum(a["reward"]["accuracy"] for a in answers if a["stage"] == "grpo") == pytest.approx(grpo["accuracy"] * grpo["n"])
    sft_steps = load_config("demo").train.sft_warmup
    phases = [json.loads(line)["phase"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["sft"] * sft_steps + ["grpo"] * 12
