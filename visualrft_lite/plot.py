"""`curves.png` for a run directory: reward, accuracy, KL, length and SFT loss against step.

Reads `metrics.jsonl` (one JSON object per optimizer step, `phase` "sft" or "grpo") and,
when present, `heldout.jsonl` (greedy held-out scores at the base / after-SFT / after-GRPO
stages) and `alerts.jsonl` (health warnings: step, rule, message; a dashed line per alert).
Draws with a bare `Figure` on the Agg canvas: no pyplot, so no global backend switch and no
figure registry that could leak into a caller's own plotting.

    from visualrft_lite.plot import plot_run
    plot_run(Path("runs/demo"))          # -> runs/demo/curves.png
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visualrft_lite.errors import UserError
from visualrft_lite.rundir import RunDir

log = logging.getLogger(__name__)

PHASE_COLORS = {"sft": "#f2c14e", "grpo": "#5b8def"}
STAGE_MARKERS = {"base": "o", "sft": "s", "grpo": "D"}
BAND_ALPHA = 0.12
ALERT_COLORS = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class RunHistory:
    """What a run directory's logs hold, after dropping lines that do not parse."""

    metrics: list[dict[str, Any]]
    heldout: list[dict[str, Any]] = field(default_factory=list)
    malformed: int = 0
    """Lines skipped in all files: not JSON, not an object, or without an integer step."""
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """Health alerts in file order: {"step", "rule", "message"}."""


def json_objects(path: Path) -> Iterator[dict[str, Any] | None]:
    """Each non-blank line of a JSONL file as a dict, or None where it is not a JSON object."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                yield None
                continue
            yield row if isinstance(row, dict) else None


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows with an integer `step`, sorted by step (the last line wins a repeated step), and the skip count.

    A repeated step happens when a resumed run redoes steps past its checkpoint; the later
    line is the one the final weights came from. A torn last line (a run still writing) is
    just one more skipped line.
    """
    by_step: dict[int, dict[str, Any]] = {}
    malformed = 0
    for row in json_objects(path):
        step = row.get("step") if row is not None else None
        if not isinstance(step, int) or isinstance(step, bool):
            malformed += 1
            continue
        by_step[step] = row
    return [by_step[s] for s in sorted(by_step)], malformed


def read_heldout(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Held-out rows in file order; unlike metrics, several stages may share a step."""
    rows, malformed = [], 0
    for row in json_objects(path):
        if row is None or number(row.get("step")) is None or number(row.get("accuracy")) is None:
            malformed += 1
            continue
        rows.append(row)
    return rows, malformed


def read_alerts(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Alert rows in file order; a row needs an integer step and a string rule."""
    rows, malformed = [], 0
    for row in json_objects(path):
        step = row.get("step") if row is not None else None
        if not isinstance(step, int) or isinstance(step, bool) or not isinstance(row.get("rule"), str):
            malformed += 1
            continue
        rows.append(row)
    return rows, malformed


def read_run(run_dir: Path) -> RunHistory:
    """The logs of a run directory; a UserError if there is nothing to plot."""
    path = run_dir / RunDir.METRICS
    metrics, malformed = read_jsonl(path)
    if not metrics:
        if malformed:
            raise UserError(f"{path} has no readable lines ({malformed} malformed); is the run writing it?")
        raise UserError(f"{run_dir} has no metrics.jsonl; is it a run directory?")
    heldout, bad_heldout = read_heldout(run_dir / RunDir.HELDOUT)
    alerts, bad_alerts = read_alerts(run_dir / RunDir.ALERTS)
    return RunHistory(metrics, heldout, malformed + bad_heldout + bad_alerts, alerts)


def phase_of(row: dict[str, Any]) -> str:
    # Logs written before SFT existed have no phase; they were all GRPO.
    return "sft" if row.get("phase") == "sft" else "grpo"


def phase_spans(metrics: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """Runs of consecutive steps in one phase: (phase, first step, last step), in step order.

    >>> phase_spans([{"step": 1, "phase": "sft"}, {"step": 2, "phase": "sft"}, {"step": 3, "phase": "grpo"}])
    [('sft', 1, 2), ('grpo', 3, 3)]
    """
    spans: list[tuple[str, int, int]] = []
    for row in sorted(metrics, key=lambda r: r["step"]):
        phase, step = phase_of(row), row["step"]
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], step)
        else:
            spans.append((phase, step, step))
    return spans


def number(value: Any) -> float | None:
    """A plottable float, or None for a missing / non-numeric value (NaN stays NaN: a gap)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def line(ax: Any, rows: list[dict[str, Any]], key: str, **style: Any) -> None:
    """Plot `key` against step, or nothing at all (no empty line, no legend entry) when no row has it."""
    xs, ys = series(rows, key)
    if xs:
        ax.plot(xs, ys, marker="." if len(xs) == 1 else None, **style)


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that carry a number under `key`."""
    xs, ys = [], []
    for row in rows:
        v = number(row.get(key))
        if v is not None:
            xs.append(row["step"])
            ys.append(v)
    return xs, ys


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's training curves to `out` (default `run_dir/curves.png`) and return its path.

    Six panels share the step axis: reward (mean ± std over the step's completions), reward
    components, accuracy (IoU for detection) and format rate with held-out scores as
    markers, KL, completion length, SFT loss. SFT and GRPO phases are shaded on every
    panel, with a line where GRPO starts; health alerts (alerts.jsonl) are dashed lines at
    their steps, one colour per rule. Malformed lines are skipped, logged and noted
    under the figure. The file is replaced atomically, so a viewer never sees half a PNG.
    """
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    out = Path(out) if out is not None else run_dir / RunDir.CURVES
    fig = curves_figure(run, title=run_dir.name)
    if run.malformed:
        log.warning("%s: skipped %d malformed log line(s)", run_dir, run.malformed)
    write_png(fig, out)
    return out


def curves_figure(run: RunHistory, title: str) -> Any:
    """The six-panel figure (a matplotlib Figure on an Agg canvas) for one run's logs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sft = [r for r in run.metrics if phase_of(r) == "sft"]
    grpo = [r for r in run.metrics if phase_of(r) == "grpo"]
    spans = phase_spans(run.metrics)

    fig = Figure(figsize=(13, 10), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 2, sharex=True).ravel()
    ax_reward, ax_parts, ax_acc, ax_kl, ax_len, ax_loss = axes

    # Reward: the band is ±1 std of single completions' rewards, the spread GRPO's advantages come from.
    xs, mean = series(grpo, "reward")
    if xs:
        ax_reward.plot(xs, mean, color="C0", marker="." if len(xs) == 1 else None, label="mean")
        std_by_step = dict(zip(*series(grpo, "reward_std")))
        bx = [x for x in xs if x in std_by_step]
        if bx:
            m = dict(zip(xs, mean))
            ax_reward.fill_between(bx, [m[x] - std_by_step[x] for x in bx], [m[x] + std_by_step[x] for x in bx],
                                   color="C0", alpha=0.2, linewidth=0, label="± std")
    ax_reward.set_title("reward (sum of components)")

    components = sorted({k for r in grpo for k in r if k.startswith("reward/")})
    for i, key in enumerate(components):
        line(ax_parts, grpo, key, color=f"C{i}", label=key.removeprefix("reward/"))
    ax_parts.set_title("reward components")

    line(ax_acc, grpo, "accuracy", color="C2", label="accuracy (train rollouts)")
    line(ax_acc, grpo, "format_rate", color="C1", linestyle="--", label="format rate (train rollouts)")
    for stage in dict.fromkeys(r.get("stage", "?") for r in run.heldout):
        rows = [r for r in run.heldout if r.get("stage", "?") == stage]
        hx = [number(r["step"]) for r in rows]
        hy = [number(r["accuracy"]) for r in rows]
        ax_acc.plot(hx, hy, linestyle="none", marker=STAGE_MARKERS.get(stage, "X"), markersize=8, color="black",
                    markerfacecolor="white", markeredgewidth=1.5, label=f"held-out accuracy: {stage}", zorder=5)
        for x, y in zip(hx, hy):
            ax_acc.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax_acc.margins(y=0.12)  # room for the held-out value labels above their markers
    ax_acc.set_title("accuracy (IoU for detection) and format rate")

    line(ax_kl, grpo, "kl", color="C3")
    ax_kl.set_title("KL to the reference policy")
    line(ax_len, grpo, "completion_length", color="C4")
    ax_len.set_title("completion length (tokens, mean)")
    line(ax_loss, sft, "loss", color="C5")
    ax_loss.set_title("SFT loss (token-mean NLL)")

    for ax in axes:
        if not (ax.lines or ax.collections):  # decided before the shading, which would count as data
            phase, rows = ("SFT", sft) if ax is ax_loss else ("GRPO", grpo)
            what = "not logged" if rows else f"no {phase} steps"
            ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="gray")
            ax.set_yticks([])
        shade_phases(ax, spans)
        mark_alerts(ax, run.alerts)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    for ax in axes[-2:]:
        ax.set_xlabel("step")

    phases = " → ".join(f"{p.upper()} steps {a}–{b}" for p, a, b in spans)
    fig.suptitle(f"{title}: {phases}", fontsize=12)
    fig.legend(handles=phase_legend(spans) + alert_legend(run.alerts), loc="outside upper right", ncols=3,
               fontsize=9, frameon=False)
    if run.malformed:
        fig.text(0.01, 0.002, f"{run.malformed} malformed log line(s) skipped", fontsize=8, color="gray")
    return fig


def shade_phases(ax: Any, spans: list[tuple[str, int, int]]) -> None:
    """Shade each phase over its steps ± half a step, so the boundary line falls between the
    last SFT point and the first GRPO point (the after-SFT held-out score sits left of it)."""
    for i, (phase, first, last) in enumerate(spans):
        ax.axvspan(first - 0.5, last + 0.5, color=PHASE_COLORS[phase], alpha=BAND_ALPHA, linewidth=0, zorder=0)
        if i > 0:
            ax.axvline(first - 0.5, color="gray", linestyle=":", linewidth=1.2, zorder=1)


def alert_colors(alerts: list[dict[str, Any]]) -> dict[str, str]:
    """One colour per rule, in order of first appearance."""
    rules = dict.fromkeys(a["rule"] for a in alerts)
    return {rule: ALERT_COLORS[i % len(ALERT_COLORS)] for i, rule in enumerate(rules)}


def mark_alerts(ax: Any, alerts: list[dict[str, Any]]) -> None:
    """A dashed vertical line at each alert's step, coloured by rule (named in the figure legend)."""
    colors = alert_colors(alerts)
    for a in alerts:
        ax.axvline(a["step"], color=colors[a["rule"]], linestyle="--", linewidth=1.2, alpha=0.8, zorder=2)


def alert_legend(alerts: list[dict[str, Any]]) -> list[Any]:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=c, linestyle="--", label=f"alert: {rule}") for rule, c in alert_colors(alerts).items()]


def phase_legend(spans: list[tuple[str, int, int]]) -> list[Any]:
    """One legend for the whole figure: the phases present, and the boundary line if there is one."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(color=PHASE_COLORS[p], alpha=BAND_ALPHA * 2, label=f"{p.upper()} phase")
                          for p in dict.fromkeys(p for p, _, _ in spans)]
    if len(spans) > 1:
        handles.append(Line2D([], [], color="gray", linestyle=":", label="phase change"))
    return handles


def write_png(fig: Any, out: Path) -> None:
    """Readers see the old file or the new one, never a torn one (`atomic.write_bytes`)."""
    import io

    from visualrft_lite.atomic import write_bytes

    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_bytes(out, buffer.getvalue())
