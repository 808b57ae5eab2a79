"""The GRPO variants and run-health tools, each through a real run on the tiny model.

Hand-derived tests of the losses and rules live in test_grpo.py and test_alerts.py; here
each option is switched on in the loop and must train, log and leave its files.
"""

from __future__ import annotations

import json

import pytest
from helpers import invoke
from test_train import reachable_reward, read_metrics, tiny_overrides  # noqa: F401 (fixture)

from visualrft_lite.config import load_config
from visualrft_lite.train import train


@pytest.fixture
def cfg_for(tiny_model_dir, shapes_root):
    def make(**extra):
        return load_config("demo", tiny_overrides(tiny_model_dir, shapes_root, **extra))
    return make


def test_dapo_options_and_tensorboard(cfg_for, tmp_path, reachable_reward):
    pytest.importorskip("tensorboard")
    cfg = cfg_for(**{"train.steps": 2, "grpo.dynamic_sampling": True, "grpo.max_sampling_draws": 3,
                     "grpo.mask_truncated": True, "grpo.reward_aggregation": "normalize_then_sum",
                     "grpo.epsilon_high": 0.28, "train.report_to": "tensorboard"})
    run = train(cfg, out=tmp_path / "r", quiet=True)
    lines = read_metrics(run)
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:
        assert 1 <= m["sampling_draws"] <= 3 and m["dropped_groups"] >= 0
        assert m["entropy"] > 0  # from the policy pass's own logits
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))


def test_gspo_with_several_updates_per_rollout(cfg_for, tmp_path, reachable_reward):
    cfg = cfg_for(**{"train.steps": 1, "grpo.importance_sampling": "sequence", "grpo.num_iterations": 2})
    run = train(cfg, out=tmp_path / "r", quiet=True)
    m = read_metrics(run)[0]
    assert m["skipped_update"] is False and m["grad_norm"] > 0


def test_tied_groups_warn_and_are_written_to_alerts(tmp_path, tiny_model_dir, shapes_root):
    # A random model never writes the answer format: every group scores 0 everywhere, so every
    # group ties; after 3 steps in a row the run warns once and names the knob.
    args = tiny_overrides(tiny_model_dir, shapes_root, **{"train.steps": 4, "train.samples_every": 2})
    result = invoke("train", "--preset", "demo", "--out", tmp_path / "r", *[x for a in args for x in ("--set", a)])
    assert result.exit_code == 0, result.output[-2000:]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    alerts = [json.loads(line) for line in (tmp_path / "r" / "alerts.jsonl").read_text().splitlines()]
    assert any(a["rule"] == "zero_signal" for a in alerts), alerts
    assert len(warnings) == len(alerts)  # once per episode, not every step
    # the completions of the run drawn on their images
    drawn = invoke("samples", tmp_path / "r", "--out", tmp_path / "pngs")
    assert drawn.exit_code == 0, drawn.output
    assert list((tmp_path / "pngs").glob("*.png"))
