"""Health alerts: each rule on synthetic metric streams, once per episode, alerts.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visualrft_lite.alerts import AlertMonitor, answer_stats, detection_box_stats
from visualrft_lite.config import AlertsConfig, load_config
from visualrft_lite.errors import UserError

# Only the rule under test is on in most streams, so another rule cannot make a test pass.
ALL_OFF = dict(format_zero_steps=0, zero_signal_steps=0, length_collapse_fraction=0.0, entropy_collapse_fraction=0.0,
               kl_jump_factor=0.0, top_answer_steps=0, low_confidence_steps=0)


def only(**on) -> AlertsConfig:
    return AlertsConfig(**{**ALL_OFF, **on})


def fired_steps(monitor: AlertMonitor, rows: list[dict]) -> list[tuple[int, str]]:
    return [(a.step, a.rule) for row in rows for a in monitor.update(row)]


def stream(key: str, values: list[float | None], **extra) -> list[dict]:
    """Rows for steps 1, 2, ... with `key` set (None: the step does not log it)."""
    return [{"step": i, "phase": "grpo", **extra, **({} if v is None else {key: v})} for i, v in enumerate(values, 1)]


# ---------------------------------------------------------------- one rule at a time


@pytest.mark.parametrize("values, want", [
    # 0 for steps 1-3: the third zero in a row is when the rule fires
    ([0, 0, 0, 0, 0], [3]),
    # a non-zero step resets the count: zeros at 1-2, then 4-6 -> fires at 6
    ([0, 0, 0.5, 0, 0, 0], [6]),
    # never three zeros in a row
    ([0, 0, 0.1, 0, 0], []),
    # an episode ends when the rate recovers; a second run of zeros warns again
    ([0, 0, 0, 1, 0, 0, 0], [3, 7]),
])
def test_format_zero(values, want):
    m = AlertMonitor(only(format_zero_steps=3))
    assert fired_steps(m, stream("format_rate", values)) == [(s, "format_zero") for s in want]


def test_zero_signal_default_is_every_group_tied_for_three_steps():
    m = AlertMonitor(AlertsConfig(**{**ALL_OFF, "zero_signal_steps": 3}))  # defaults: fraction 1.0
    # 0.75 tied is not "every group": no streak; then 1.0 at steps 3, 4, 5 -> fires at 5 only
    got = fired_steps(m, stream("zero_signal_fraction", [1.0, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]))
    assert got == [(5, "zero_signal")]
    assert "grpo.dynamic_sampling" in m.history[0].message  # the message names the knob


def test_zero_signal_fraction_threshold():
    m = AlertMonitor(only(zero_signal_steps=2, zero_signal_fraction=0.5))
    got = fired_steps(m, stream("zero_signal_fraction", [0.5, 0.6, 0.4, 0.5, 0.5]))
    assert got == [(2, "zero_signal"), (5, "zero_signal")]  # 0.4 ends the first episode


def test_length_collapse():
    # window 2: baseline = mean(100, 100) = 100; fires when the last-2 mean < 0.3·100 = 30.
    # step 3: mean(100, 40) = 70; step 4: mean(40, 20) = 30 (not < 30); step 5: mean(20, 10) = 15 -> fires.
    m = AlertMonitor(only(length_collapse_fraction=0.3, window=2))
    got = fired_steps(m, stream("completion_length", [100, 100, 40, 20, 10, 10]))
    assert got == [(5, "length_collapse")]
    assert "15 tokens from 100" in m.history[0].message


def test_entropy_collapse_and_rearm():
    # window 1: baseline 2.0; fires below 0.1·2 = 0.2; recovers at 0.5 (re-arms); fires again at 0.1
    m = AlertMonitor(only(entropy_collapse_fraction=0.1, window=1))
    got = fired_steps(m, stream("entropy", [2.0, 1.0, 0.19, 0.1, 0.5, 0.1]))
    assert got == [(3, "entropy_collapse"), (6, "entropy_collapse")]
    assert "rollout.temperature" in m.history[0].message


def test_kl_jump():
    # window 3, factor 5, min 0.1. Steps 1-3 fill the window (no alert before it is full).
    # step 4: 0.5 > 5·mean(0.02, 0.02, 0.02) = 0.1 and > 0.1 -> fires.
    # step 5: 0.6 vs 5·mean(0.02, 0.02, 0.5) = 0.9 -> cleared; step 6: 0.05 < min -> stays clear.
    m = AlertMonitor(only(kl_jump_factor=5.0, kl_jump_min=0.1, window=3))
    got = fired_steps(m, stream("kl", [0.02, 0.02, 0.02, 0.5, 0.6, 0.05]))
    assert got == [(4, "kl_jump")]


def test_kl_jump_needs_the_absolute_minimum():
    # 0.001 -> 0.05 is a 50-fold jump but below kl_jump_min = 0.1
    m = AlertMonitor(only(kl_jump_factor=5.0, kl_jump_min=0.1, window=2))
    assert fired_steps(m, stream("kl", [0.001, 0.001, 0.05])) == []


def test_answer_collapse_only_when_truths_differ():
    cfg = only(top_answer_steps=2, top_answer_fraction=0.9)
    rows = [{"step": s, "top_answer_fraction": 1.0, "top_truth_fraction": 0.5} for s in (1, 2, 3)]
    assert fired_steps(AlertMonitor(cfg), rows) == [(2, "answer_collapse")]
    # every image of the step has the same label: one answer is right, not a collapse
    rows = [{"step": s, "top_answer_fraction": 1.0, "top_truth_fraction": 1.0} for s in (1, 2, 3)]
    assert fired_steps(AlertMonitor(cfg), rows) == []
    # no truth fraction logged: the answers alone decide
    rows = [{"step": s, "top_answer_fraction": 1.0} for s in (1, 2)]
    assert fired_steps(AlertMonitor(cfg), rows) == [(2, "answer_collapse")]


def test_low_confidence_boxes():
    cfg = only(low_confidence_steps=2, low_confidence_fraction=0.5, min_boxes_per_completion=3.0)
    many = {"low_confidence_box_fraction": 0.8, "boxes_per_completion": 6.0}
    few = {"low_confidence_box_fraction": 0.8, "boxes_per_completion": 1.0}  # low but not many boxes
    rows = [{"step": 1, **many}, {"step": 2, **few}, {"step": 3, **many}, {"step": 4, **many}]
    m = AlertMonitor(cfg)
    assert fired_steps(m, rows) == [(4, "low_confidence_boxes")]
    assert "6.0 boxes each, 80%" in m.history[0].message and "reward.weights.confidence" in m.history[0].message


# ---------------------------------------------------------------- the monitor


def test_missing_metrics_are_no_evidence():
    # steps without format_rate neither extend nor break the streak of zeros
    m = AlertMonitor(only(format_zero_steps=3))
    assert fired_steps(m, stream("format_rate", [0, None, 0, None, 0])) == [(5, "format_zero")]
    # NaN and strings are no evidence either
    m = AlertMonitor(only(format_zero_steps=2))
    rows = stream("format_rate", [0, float("nan"), "n/a", 0])  # type: ignore[list-item]
    assert fired_steps(m, rows) == [(4, "format_zero")]


def test_sft_steps_are_ignored_and_disabled_monitor_is_silent():
    rows = [{"step": s, "phase": "sft", "format_rate": 0.0} for s in (1, 2, 3)]
    assert fired_steps(AlertMonitor(only(format_zero_steps=1)), rows) == []
    rows = [{"step": s, "format_rate": 0.0} for s in (1, 2, 3)]
    assert fired_steps(AlertMonitor(AlertsConfig(enabled=False, format_zero_steps=1)), rows) == []


def test_default_config_on_a_healthy_stream_is_quiet():
    rows = [{"step": s, "phase": "grpo", "format_rate": 1.0, "zero_signal_fraction": 0.5,
             "completion_length": 80.0 + s % 3, "entropy": 0.9, "kl": 0.01 * s, "top_answer_fraction": 0.5,
             "low_confidence_box_fraction": 0.1, "boxes_per_completion": 2.0} for s in range(1, 60)]
    assert fired_steps(AlertMonitor(), rows) == []


def test_alerts_jsonl(tmp_path: Path):
    path = tmp_path / "run" / "alerts.jsonl"
    m = AlertMonitor(only(format_zero_steps=1, zero_signal_steps=1), path)
    m.update({"step": 1, "format_rate": 0.0, "zero_signal_fraction": 1.0})  # two rules start at once
    m.update({"step": 2, "format_rate": 0.0, "zero_signal_fraction": 1.0})  # same episodes: nothing new
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["step"], x["rule"]) for x in lines] == [(1, "format_zero"), (1, "zero_signal")]
    assert all(set(x) == {"step", "rule", "message"} for x in lines)


def test_alerts_section_loads_and_validates():
    cfg = load_config(None, ["alerts.kl_jump_factor=10", "alerts.format_zero_steps=0"])
    assert cfg.alerts.kl_jump_factor == 10.0 and cfg.alerts.format_zero_steps == 0
    with pytest.raises(UserError, match="alerts.top_answer_fraction"):
        load_config(None, ["alerts.top_answer_fraction=1.5"])


# ---------------------------------------------------------------- metrics from answers


@pytest.mark.parametrize("answers, G, truths, want", [
    # 3 images, G = 2: majorities cat, cat, dog -> top "cat" on 2 of 3 images; 3 distinct of 6 answers
    (["cat", "cat", "Cat", "bird", "dog", "dog"], 2, ["cat", "dog", "fox"],
     {"top_answer_fraction": 2 / 3, "top_answer": "cat", "answer_diversity": 3 / 6, "top_truth_fraction": 1 / 3}),
    # every image answered "daisy" (after normalisation) while the truths all differ
    (["Daisy", "daisy", "daisy!", "DAISY"], 2, ["daisy", "rose"],
     {"top_answer_fraction": 1.0, "top_answer": "daisy", "answer_diversity": 1 / 4, "top_truth_fraction": 0.5}),
    # an image with no parsed answer does not count; counts may be ints
    ([None, None, 3, 3, 3, 4], 2, None, {"top_answer_fraction": 1.0, "top_answer": "3", "answer_diversity": 2 / 4}),
    # one answered image is no comparison across images
    (["cat", "cat", None, None], 2, None, {}),
])
def test_answer_stats(answers, G, truths, want):
    got = answer_stats(answers, G, truths)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == (pytest.approx(v) if isinstance(v, float) else v)


def test_answer_stats_rejects_a_bad_layout():
    with pytest.raises(ValueError):
        answer_stats(["a", "b", "c"], 2)
    with pytest.raises(ValueError):
        answer_stats(["a", "b"], 1, truths=["a"])


@pytest.mark.parametrize("predictions, want", [
    # 4 completions, 6 boxes; 3 below 0.3 (0.1, 0.0, 0.29); 0.3 itself is not low
    ([[((0, 0, 1, 1), 0.9), ((0, 0, 2, 2), 0.1)], [], [((0, 0, 1, 1), 0.0), ((1, 1, 2, 2), 0.29), ((2, 2, 3, 3), 0.3)],
      [((0, 0, 1, 1), 0.8)]], {"boxes_per_completion": 1.5, "low_confidence_box_fraction": 0.5}),
    # no boxes at all: 0 boxes, fraction 0 (not a division by zero)
    ([[], []], {"boxes_per_completion": 0.0, "low_confidence_box_fraction": 0.0}),
    ([], {}),
])
def test_detection_box_stats(predictions, want):
    assert detection_box_stats(predictions) == pytest.approx(want)
