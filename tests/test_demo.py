"""A shortened `make demo`: the demo preset, fewer steps, same code path.

The story the demo tells must come from the run: before training the tiny model never
follows the answer format; the SFT warm-up teaches it; the held-out reward rises.
"""

from __future__ import annotations

import json

import pytest
from helpers import invoke


@pytest.mark.slow
def test_shortened_demo_reward_rises(tmp_path):
    out = tmp_path / "demo"
    result = invoke("train", "--preset", "demo", "--out", out,
                    "--set", "train.sft_warmup=20", "--set", "train.steps=4", "--set", "eval.heldout=12")
    assert result.exit_code == 0, result.output[-2000:]
    rows = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["base", "sft", "grpo"]
    base, sft, grpo = rows
    assert base["format_rate"] == 0.0  # a random model does not write <think>/<answer>
    assert sft["format_rate"] >= 0.75  # the warm-up teaches the format
    assert grpo["reward"] > base["reward"]
    assert "before training" in result.output and "after GRPO" in result.output  # the printed table
    assert (out / "curves.png").stat().st_size > 0
    phases = [json.loads(line)["phase"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["sft"] * 20 + ["grpo"] * 4
