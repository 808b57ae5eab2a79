"""The CLI layer: one-line errors, help text, verbs wired to their package functions."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cli import main


def test_plot_verb(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "phase": "sft", "loss": 2.0}\n')
    result = CliRunner().invoke(main, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(run / "curves.png")
    assert (run / "curves.png").stat().st_size > 0
    # not a run directory: one line, exit 1, no traceback
    result = CliRunner().invoke(main, ["plot", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path} has no metrics.jsonl; is it a run directory?\n"


def test_presets_list_and_show() -> None:
    out = CliRunner().invoke(main, ["presets", "list"])
    assert out.exit_code == 0
    assert any(line.startswith("flowers-1shot ") for line in out.output.splitlines())
    shown = CliRunner().invoke(main, ["presets", "show", "coco-8cat-2shot"])
    assert shown.exit_code == 0 and "beta: 0.04" in shown.output and "#" in shown.output  # comments kept


def test_unknown_preset_is_one_line_with_near_matches() -> None:
    out = CliRunner().invoke(main, ["train", "--preset", "flowers-1shoot"])
    assert out.exit_code == 1
    assert out.output.count("\n") == 1 and "did you mean 'flowers-1shot'" in out.output
    assert "Traceback" not in out.output


def test_train_needs_a_preset_or_resume() -> None:
    out = CliRunner().invoke(main, ["train"])
    assert out.exit_code == 2 and "--preset" in out.output


def test_reward_reads_stdin_and_reports_bad_lines() -> None:
    good = {"task": "classify", "completion": "<think>petals</think><answer>daisy</answer>", "solution": "daisy"}
    lines = json.dumps(good) + "\n{not json\n"
    out = CliRunner().invoke(main, ["reward", "-"], input=lines)
    assert out.exit_code == 1  # a bad line makes the exit non-zero, the good one is still scored
    first = json.loads(out.stdout.splitlines()[0])
    assert first["format"] == 1.0 and first["accuracy"] == 1.0 and first["total"] == 2.0
    assert "line 2" in out.stderr
