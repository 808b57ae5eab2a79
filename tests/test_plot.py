"""curves.png from a run directory's logs: every shape of run plots, a non-run is a UserError."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from visualrft_lite.errors import UserError
from visualrft_lite.plot import RunHistory, curves_figure, phase_spans, plot_run, read_jsonl, read_run


def sft_row(step: int) -> dict:
    return {"step": step, "phase": "sft", "loss": 3.0 / step, "tokens": 40, "grad_norm": 1.0, "lr": 1e-4}


def grpo_row(step: int) -> dict:
    acc = min(1.0, 0.1 * step)
    return {"step": step, "phase": "grpo", "reward": 1.0 + acc, "reward_std": 0.3,
            "reward/format": 1.0, "reward/accuracy": acc, "accuracy": acc, "format_rate": 1.0,
            "kl": 0.01 * step, "loss": 0.0, "completion_length": 30.0 - step, "skipped_update": False}


def write_run(run_dir: Path, rows: list[dict], heldout: list[dict] | None = None, extra: str = "") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)
    if heldout is not None:
        (run_dir / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in heldout))
    return run_dir


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 100 and im.size[1] > 100
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))  # the temp file was renamed, not left behind


HELDOUT = [{"step": 0, "stage": "base", "accuracy": 0.1, "format_rate": 0.0, "reward": 0.1},
           {"step": 3, "stage": "sft", "accuracy": 0.3, "format_rate": 1.0, "reward": 1.3},
           {"step": 8, "stage": "grpo", "accuracy": 0.7, "format_rate": 1.0, "reward": 1.7}]


@pytest.mark.parametrize("rows, heldout", [
    # the demo's shape: SFT warm-up, then GRPO, with held-out scores at all three stages
    ([sft_row(s) for s in (1, 2, 3)] + [grpo_row(s) for s in range(4, 9)], HELDOUT),
    # plain `train`: GRPO only, no held-out file
    ([grpo_row(s) for s in range(1, 6)], None),
    # plain `sft`: the GRPO panels are empty but still drawn
    ([sft_row(s) for s in (1, 2, 3)], HELDOUT[:1]),
], ids=["sft+grpo", "grpo-only", "sft-only"])
def test_plot_run_writes_a_png(tmp_path: Path, rows: list[dict], heldout: list[dict] | None) -> None:
    run = write_run(tmp_path / "run", rows, heldout)
    out = plot_run(run)
    assert out == run / "curves.png"
    assert_png(out)


def test_plot_run_out_path_and_overwrite(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [grpo_row(1)])  # one step: a single point, a zero-width std band
    out = tmp_path / "figs" / "mine.png"  # a directory that does not exist yet
    out.parent.mkdir()
    out.write_bytes(b"stale")
    assert plot_run(run, out) == out
    assert_png(out)  # the stale bytes were replaced by a real PNG
    assert not (run / "curves.png").exists()


def test_missing_keys_and_malformed_lines_still_plot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [{"step": 1, "phase": "grpo", "reward": 0.5},  # no std, no components, no kl
            {"step": 2, "phase": "grpo", "kl": float("nan"), "accuracy": "n/a"},  # NaN is a gap; a string is ignored
            {"step": 3}]  # no phase: an old GRPO log
    extra = 'not json\n[1, 2]\n{"phase": "grpo"}\n{"step": 4, "rew'  # 4 bad lines, the last one torn mid-write
    run = write_run(tmp_path / "run", rows, extra=extra)
    with caplog.at_level(logging.WARNING, logger="visualrft_lite.plot"):
        assert_png(plot_run(run))
    assert "skipped 4 malformed" in caplog.text


@pytest.mark.parametrize("make", [
    lambda d: None,  # the directory does not exist
    lambda d: d.mkdir(),  # a directory with no metrics.jsonl
    lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("")),  # an empty file (a run that crashed at start)
], ids=["no-dir", "no-file", "empty-file"])
def test_not_a_run_directory_is_a_user_error(tmp_path: Path, make) -> None:
    run = tmp_path / "run"
    make(run)
    with pytest.raises(UserError, match=r"has no metrics\.jsonl; is it a run directory\?"):
        plot_run(run)
    assert not (tmp_path / "run" / "curves.png").exists()


def test_only_malformed_lines_is_a_user_error_naming_the_count(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [], extra="garbage\n{oops\n")
    with pytest.raises(UserError, match=r"no readable lines \(2 malformed\)"):
        plot_run(run)


@pytest.mark.parametrize("steps_phases, spans", [
    # warm-up of 3 then GRPO: the boundary is at the first GRPO step, 4
    ([(1, "sft"), (2, "sft"), (3, "sft"), (4, "grpo"), (5, "grpo")], [("sft", 1, 3), ("grpo", 4, 5)]),
    # lines out of order (a hand-merged log) are sorted by step first
    ([(4, "grpo"), (1, "sft"), (3, "grpo"), (2, "sft")], [("sft", 1, 2), ("grpo", 3, 4)]),
    # a resumed run that started mid-GRPO: one span, no boundary
    ([(11, "grpo"), (12, "grpo")], [("grpo", 11, 12)]),
    # no phase key is GRPO (logs from before SFT existed)
    ([(1, None), (2, None)], [("grpo", 1, 2)]),
    # a single SFT step
    ([(1, "sft")], [("sft", 1, 1)]),
    ([], []),
])
def test_phase_spans(steps_phases: list[tuple[int, str | None]], spans: list[tuple[str, int, int]]) -> None:
    metrics = [{"step": s} if p is None else {"step": s, "phase": p} for s, p in steps_phases]
    assert phase_spans(metrics) == spans


def test_read_jsonl_keeps_the_last_line_of_a_repeated_step(tmp_path: Path) -> None:
    # A resume without log truncation redoes step 2; the redo is what the weights came from.
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward": 0}\n{"step": 2, "reward": 0}\n{"step": 2, "reward": 1}\n\n{"step": true}\n')
    rows, malformed = read_jsonl(path)
    assert [(r["step"], r["reward"]) for r in rows] == [(1, 0), (2, 1)]
    assert malformed == 1  # a bool is not a step; the blank line is not counted


def panel_notes(run: RunHistory) -> dict[str, list[str]]:
    """Each panel's title -> the placeholder texts drawn on it."""
    fig = curves_figure(run, title="t")
    return {ax.get_title(): [t.get_text() for t in ax.texts] for ax in fig.axes}


def test_empty_panels_say_why() -> None:
    # The phase shading counts as data to matplotlib, so an empty panel must be detected before it.
    sft_only = panel_notes(RunHistory([sft_row(s) for s in (1, 2)]))
    assert sft_only["KL to the reference policy"] == ["no GRPO steps"]
    assert sft_only["completion length (tokens, mean)"] == ["no GRPO steps"]
    assert sft_only["SFT loss (token-mean NLL)"] == []
    grpo_only = panel_notes(RunHistory([grpo_row(s) for s in (1, 2)]))
    assert grpo_only["SFT loss (token-mean NLL)"] == ["no SFT steps"]
    assert grpo_only["KL to the reference policy"] == []
    # a GRPO log without kl (an older run) says the key was not logged, not that GRPO is missing
    no_kl = panel_notes(RunHistory([{k: v for k, v in grpo_row(1).items() if k != "kl"}]))
    assert no_kl["KL to the reference policy"] == ["not logged"]
    # SFT steps without a loss key: the loss panel says so, not that GRPO is missing
    no_loss = panel_notes(RunHistory([{"step": 1, "phase": "sft"}]))
    assert no_loss["SFT loss (token-mean NLL)"] == ["not logged"]


def test_heldout_scores_are_drawn_on_the_accuracy_panel() -> None:
    fig = curves_figure(RunHistory([grpo_row(s) for s in (1, 2)], heldout=HELDOUT), title="t")
    acc = next(ax for ax in fig.axes if ax.get_title().startswith("accuracy"))
    labels = acc.get_legend_handles_labels()[1]
    assert [l for l in labels if l.startswith("held-out")] == [
        "held-out accuracy: base", "held-out accuracy: sft", "held-out accuracy: grpo"]
    assert sorted(t.get_text() for t in acc.texts) == ["0.10", "0.30", "0.70"]  # the values from HELDOUT


def test_phase_boundary_line_sits_before_the_first_grpo_step() -> None:
    # 3 SFT steps then GRPO from step 4: the line is at 3.5, between the last SFT point and the first GRPO one.
    fig = curves_figure(RunHistory([sft_row(s) for s in (1, 2, 3)] + [grpo_row(s) for s in (4, 5)]), title="t")
    for ax in fig.axes:
        vlines = [l for l in ax.lines if l.get_linestyle() == ":"]
        assert [tuple(l.get_xdata()) for l in vlines] == [(3.5, 3.5)]


ALERTS = [{"step": 5, "rule": "zero_signal", "message": "every group tied"},
          {"step": 7, "rule": "kl_jump", "message": "KL jumped"},
          {"step": 8, "rule": "zero_signal", "message": "every group tied again"}]


def test_alerts_are_dashed_lines_at_their_steps(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [grpo_row(s) for s in range(1, 10)])
    (run / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in ALERTS) + '{"rule": "no step"}\n')
    log = read_run(run)
    assert [a["step"] for a in log.alerts] == [5, 7, 8] and log.malformed == 1
    fig = curves_figure(log, title="t")
    for ax in fig.axes:
        dashed = [l for l in ax.lines if l.get_linestyle() == "--" and tuple(l.get_xdata()) in {(5, 5), (7, 7), (8, 8)}]
        assert sorted(l.get_xdata()[0] for l in dashed) == [5, 7, 8]
        by_step = {l.get_xdata()[0]: l.get_color() for l in dashed}
        assert by_step[5] == by_step[8] != by_step[7]  # one colour per rule
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "alert: zero_signal" in labels and "alert: kl_jump" in labels
    assert_png(plot_run(run))


def test_no_alerts_file_draws_no_alert_lines(tmp_path: Path) -> None:
    fig = curves_figure(RunHistory([grpo_row(s) for s in range(1, 4)]), title="t")
    assert not any(l.get_linestyle() == "--" for ax in fig.axes for l in ax.lines if l.get_color() != "C1")
    assert not any(t.get_text().startswith("alert:") for t in fig.legends[0].get_texts())
