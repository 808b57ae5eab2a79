"""`vrft-lite compare EVAL_OR_RUN ...`: evaluations side by side, the paper's rows beneath.

Each argument is read as

    an eval output      a folder holding `metrics.json` (what `vrft-lite eval` writes), or
                        that file itself: one row
    a run directory     a folder holding `config.yaml`: its newest eval output (a folder
                        inside it, or one beside it whose adapter came from it), else the
                        rows of its `heldout.jsonl` (before training, after the warm-up, at
                        the end), one row each

One row per evaluation: a label (run name and checkpoint, or the model for a base-model
eval, and for detection whether it was two-stage or one-stage), the task's headline metric,
per-category AP for detection, the presence stage's accuracy / precision / recall of a
two-stage eval, the format rate. Then,
for each setting of the paper the evaluations belong to (`paper.setting_for_preset` of the
preset they ran), the paper's baseline / SFT / Visual-RFT rows, so the layout of the
paper's Tables 2, 3 and 6 comes out directly. An eval output's preset is, in this order:
`preset=` (--preset), metrics.json's `paper` entry or `preset` key, the config.yaml of the
run its adapter came from, the name in eval's default folder (eval-<preset>-<date>-<time>).
The text table prints percent like the paper; `comparison_rows` (for --json) keeps
fractions like metrics.json.

Pure: stdlib only at import (a run's config.yaml is read with yaml, a core dependency,
when one is read).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from visualrft_lite.errors import UserError
from visualrft_lite.paper import (
    BENCHMARKS,
    MEASURED_KEY,
    Figures,
    NoFigure,
    Setting,
    fraction,
    lookup,
    setting_for_preset,
    setting_from_record,
)

PRESENCE = ("accuracy", "precision", "recall")
"""metrics.json's `presence` entries the table shows, under PRESENCE_COLUMNS."""
PRESENCE_COLUMNS = ("pres acc", "pres prec", "pres rec")

STAGES = {"base": "before training", "sft": "after SFT", "grpo": "after GRPO"}
"""heldout.jsonl's stages as the run's own held-out table names them."""

_EVAL_FOLDER = re.compile(r"eval-(?P<name>.+?)(?:-base)?-\d{8}-\d{6}")
"""`vrft-lite eval`'s default --out: runs/eval-<config name>[-base]-<date>-<time>."""


@dataclass
class Row:
    """One line of the comparison; values are fractions (None: not measured / not printed)."""

    label: str
    kind: Literal["eval", "heldout", "paper"]
    task: str
    metric: str  # vrft-lite's headline metric name (accuracy, mAP, mIoU, ...)
    value: float | None
    format_rate: float | None = None
    n: int | None = None
    per_category: dict[str, float | None] = field(default_factory=dict)  # detection: category -> AP
    presence: dict[str, float | None] | None = None  # two-stage: the presence stage's accuracy, precision, recall
    source: str | None = None  # the folder or file the row was read from
    model: str | None = None
    adapter: str | None = None
    two_stage: bool | None = None
    step: int | None = None  # held-out rows
    stage: str | None = None  # held-out rows: base / sft / grpo
    table: str | None = None  # paper rows: "Table 3"; measured rows: the table of their setting
    setting: str | None = None  # the paper setting's caption
    note: str | None = None  # why a figure is missing, how one was derived, what a row scores


@dataclass
class Comparison:
    """What `compare` builds: measured rows in argument order, then the paper's rows."""

    task: str
    metric: str
    rows: list[Row]
    categories: list[str]  # detection: per-category columns, in order of first appearance


@dataclass
class _Source:
    rows: list[Row]
    setting: Setting | NoFigure


# ----------------------------------------------------------------------------- reading


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}; it should be the metrics.json that vrft-lite eval writes") from None


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    import yaml  # a core dependency; kept out of the import so this module stays stdlib-only to load

    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read {run_dir / 'config.yaml'}: {e}") from None
    return data if isinstance(data, dict) else {}


def _section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    value = cfg.get(name)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _run_of_adapter(adapter: str | None) -> Path | None:
    """The run directory an adapter path came from: runs/X/final or runs/X/checkpoints/step-N -> runs/X.

    A relative path is read from the current folder, as eval recorded it from its own.
    """
    if not adapter:
        return None
    path = Path(adapter)
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder
    return None


def _adapter_label(adapter: str) -> str:
    """'coco4' for runs/coco4/final, 'coco4 step-100' for runs/coco4/checkpoints/step-100."""
    path = Path(adapter)
    if path.name == "final":
        return path.parent.name or str(path)
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name} {path.name}"
    return path.name or str(path)


def _eval_row(folder: Path, metrics: dict[str, Any]) -> Row:
    task = metrics.get("task")
    if not isinstance(task, str):
        raise UserError(f"{folder / 'metrics.json'} names no task; it should be the metrics.json vrft-lite eval writes")
    metric = str(metrics.get("headline") or "accuracy")
    adapter = metrics.get("adapter")
    model = metrics.get("model")
    if adapter:
        label = _adapter_label(str(adapter))
    else:
        label = f"{str(model or 'model').rstrip('/').rsplit('/', 1)[-1]} (base)"
    if metrics.get("protocol") == "one-stage":
        label += " one-stage"
    elif metrics.get("two_stage"):
        label += " two-stage"
    gate = metrics.get("presence")
    presence = {k: _number(gate.get(k)) for k in PRESENCE} if isinstance(gate, dict) else None
    per_category = {str(name): _number(c.get("AP")) if isinstance(c, dict) else None
                    for name, c in (metrics.get("per_category") or {}).items()}  # detection's AP per category
    return Row(label=label, kind="eval", task=task, metric=metric, value=_number(metrics.get(metric)),
               format_rate=_number(metrics.get("format_rate")), n=metrics.get("n"), per_category=per_category,
               presence=presence, source=str(folder), model=model, adapter=adapter,
               two_stage=metrics.get("two_stage"))


def _eval_setting(folder: Path, metrics: dict[str, Any], preset: str | None) -> Setting | NoFigure:
    """Which setting of the paper an eval output belongs to, from the best evidence it carries."""
    model = metrics.get("model")
    if preset:
        return setting_for_preset(preset, model)
    recorded = metrics.get("paper")
    setting = setting_from_record(recorded if isinstance(recorded, dict) else None)
    if setting is not None:
        return setting
    if isinstance(recorded, dict) and recorded.get("reason"):
        return NoFigure(str(recorded["reason"]))
    name = metrics.get("preset")
    if not name:
        run = _run_of_adapter(metrics.get("adapter"))
        name = _read_run_config(run).get("name") if run else None
    if not name:
        m = _EVAL_FOLDER.fullmatch(folder.name)
        name = m.group("name") if m else None
    if not name:
        return NoFigure("the eval does not record its preset; pass --preset NAME to compare it with the paper")
    return setting_for_preset(str(name), model)


def _newest_eval_of_run(run_dir: Path) -> Path | None:
    """An eval output inside the run, or beside it with an adapter from it; the newest metrics.json."""
    found = [p.parent for p in run_dir.glob("*/metrics.json")]
    here = run_dir.resolve()
    for candidate in run_dir.parent.glob("*/metrics.json"):
        if candidate.parent.resolve() == here:
            continue
        try:
            adapter = json.loads(candidate.read_text()).get("adapter")
        except (OSError, ValueError, AttributeError):
            continue
        if adapter and (Path(adapter).resolve() == here or here in Path(adapter).resolve().parents):
            found.append(candidate.parent)
    return max(found, key=lambda p: (p / "metrics.json").stat().st_mtime, default=None)


def _heldout_rows(run_dir: Path, cfg: dict[str, Any]) -> list[Row]:
    path = run_dir / "heldout.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a half-written last line of a run that was stopped
            if isinstance(row, dict) and "stage" in row:
                rows.append(row)
    if not rows:
        raise UserError(f"{run_dir} is a run directory without an eval output or held-out scores; evaluate it with "
                        f"`vrft-lite eval --adapter {run_dir / 'final'} --out {run_dir / 'eval'}`, or train with "
                        f"eval.heldout: N")
    task = _section(cfg, "data").get("task")
    if not isinstance(task, str):
        raise UserError(f"{run_dir / 'config.yaml'} names no data.task; it should be the config.yaml "
                        f"vrft-lite train writes")
    model = _section(cfg, "model").get("name")
    out = []
    for row in rows:
        stage = str(row["stage"])
        when = STAGES.get(stage, stage) + ("" if stage == "base" else f" (step {row.get('step')})")
        out.append(Row(label=f"{run_dir.name} {when}", kind="heldout", task=task,
                       metric=str(row.get("metric") or "accuracy"), value=_number(row.get("accuracy")),
                       format_rate=_number(row.get("format_rate")), n=row.get("n"), source=str(path), model=model,
                       step=row.get("step"), stage=stage,
                       note=f"held-out rows score the run's eval.heldout records ({row.get('n')} of the eval split)"))
    return out


def read_source(path: Path, *, preset: str | None = None) -> tuple[list[Row], Setting | NoFigure]:
    """The rows one argument contributes and the paper setting they belong to (see the module docstring)."""
    path = Path(path)
    if path.is_file() and path.name == "metrics.json":
        path = path.parent
    if not path.exists():
        raise UserError(f"{path} does not exist; pass an eval output folder or a run directory")
    if (path / "metrics.json").is_file():
        metrics = _read_json(path / "metrics.json")
        if not isinstance(metrics, dict):
            raise UserError(f"{path / 'metrics.json'} is not the metrics.json vrft-lite eval writes")
        return [_eval_row(path, metrics)], _eval_setting(path, metrics, preset)
    if (path / "config.yaml").is_file():
        cfg = _read_run_config(path)
        model = _section(cfg, "model").get("name")
        name = preset or cfg.get("name")
        setting = setting_for_preset(str(name), model) if name else NoFigure("the run's config.yaml names no preset")
        newest = _newest_eval_of_run(path)
        if newest is not None:
            metrics = _read_json(newest / "metrics.json")
            if isinstance(metrics, dict):
                own = _eval_setting(newest, metrics, preset)  # what the eval records, else the run's preset
                return [_eval_row(newest, metrics)], own if isinstance(own, Setting) else setting
        return _heldout_rows(path, cfg), setting
    raise UserError(f"{path} is neither an eval output (no metrics.json) nor a run directory (no config.yaml); "
                    f"pass the --out of vrft-lite eval or of vrft-lite train")


# ----------------------------------------------------------------------------- building


def _paper_rows(figures: Figures, task: str, metric: str, with_title: bool) -> list[Row]:
    s = figures.setting
    shots = f"{s.shots}-shot " if s.shots is not None else ""
    title = f" ({BENCHMARKS[s.benchmark].title})" if with_title else ""
    base = f"{figures.table} {s.model}"
    which = [("baseline", f"{base} baseline{title}", figures.baseline, 0),
             ("sft", f"{base} {shots}SFT{title}", figures.sft, 1),
             ("rft", f"{base} {shots}Visual-RFT{title}", figures.rft, 2)]
    rows = []
    for _, label, value, k in which:
        if value is None:
            continue
        rows.append(Row(label=label, kind="paper", task=task, metric=metric, value=fraction(value),
                        per_category={name: fraction(t[k]) for name, t in figures.per_category.items()},
                        table=figures.table, setting=s.caption, model=s.model,
                        note="; ".join(n for n in (figures.missing, figures.derived) if n) or None))
    return rows


def compare(paths: Sequence[Path | str], *, preset: str | None = None) -> Comparison:
    """Read every argument, check they evaluate one task, append the paper's rows for their settings.

    `preset` names the setting for evaluations that do not record theirs (and overrides it).
    """
    if not paths:
        raise UserError("give at least one eval output folder or run directory to compare")
    sources = []
    for path in paths:
        rows, setting = read_source(Path(path), preset=preset)
        sources.append(_Source(rows, setting))
    first = sources[0].rows[0]
    for src in sources[1:]:
        other = src.rows[0]
        if other.task != first.task:
            raise UserError(f"cannot compare a {first.task} evaluation ({first.source}) with a {other.task} one "
                            f"({other.source}); compare evaluations of one task")
    task, metric = first.task, first.metric

    measured: list[Row] = []
    settings: list[Setting] = []
    for src in sources:
        figures = lookup(src.setting) if isinstance(src.setting, Setting) else src.setting
        for row in src.rows:
            if figures:
                row.table, row.setting = figures.table, figures.setting.caption
            else:
                why = f"no published figure: {figures.reason}"
                row.note = f"{row.note}; {why}" if row.note else why
            measured.append(row)
        if figures and MEASURED_KEY.get(str(figures.setting.metric)) == metric and figures.setting not in settings:
            settings.append(figures.setting)
    _unique_labels(measured)

    benchmarks = {s.benchmark for s in settings}
    paper_rows: dict[str, Row] = {}
    for setting in settings:
        for row in _paper_rows(lookup(setting), task, metric, with_title=len(benchmarks) > 1):  # type: ignore[arg-type]
            paper_rows.setdefault(row.label, row)  # one baseline row for 2-shot and 4-shot evals alike

    categories: list[str] = []
    for row in [*measured, *paper_rows.values()]:
        categories.extend(name for name in row.per_category if name not in categories)
    return Comparison(task=task, metric=metric, rows=[*measured, *paper_rows.values()], categories=categories)


def _unique_labels(rows: list[Row]) -> None:
    """Two evaluations of one adapter (say, with and without a --limit) get their folder's name added."""
    seen: dict[str, int] = {}
    for row in rows:
        seen[row.label] = seen.get(row.label, 0) + 1
    for row in rows:
        if seen[row.label] > 1 and row.source:
            row.label = f"{row.label} [{Path(row.source).name}]"


# ----------------------------------------------------------------------------- output


def comparison_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts (fractions, like metrics.json): what `compare --json` prints."""
    return [asdict(row) for row in comparison.rows]


def _pct(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{100 * value:>{width}.1f}"


def comparison_table(comparison: Comparison) -> str:
    """The comparison as a text table in percent, one row per evaluation, the paper's rows last."""
    rows = comparison.rows
    label_w = max(len("evaluation"), *(len(r.label) for r in rows))
    metric_w = max(6, len(comparison.metric))
    cat_w = [max(6, len(name)) for name in comparison.categories]
    gated = any(r.presence for r in rows)
    head = f"{'evaluation':<{label_w}}  {'n':>6}  {comparison.metric:>{metric_w}}"
    head += "".join(f"  {name:>{w}}" for name, w in zip(comparison.categories, cat_w))
    head += "".join(f"  {name:>9}" for name in PRESENCE_COLUMNS) if gated else ""
    head += f"  {'format':>6}"
    lines = [f"{comparison.task}, {comparison.metric} (percent)", head, "-" * len(head)]
    for i, r in enumerate(rows):
        if r.kind == "paper" and (i == 0 or rows[i - 1].kind != "paper"):
            lines.append("-" * len(head))  # the paper's rows below a rule
        n = "-" if r.n is None else str(r.n)
        line = f"{r.label:<{label_w}}  {n:>6}  {_pct(r.value, metric_w)}"
        line += "".join(f"  {_pct(r.per_category.get(name), w)}" for name, w in zip(comparison.categories, cat_w))
        line += "".join(f"  {_pct((r.presence or {}).get(k), 9)}" for k in PRESENCE) if gated else ""
        lines.append(line + f"  {_pct(r.format_rate, 6)}")
    legend = ["pres acc / prec / rec: the presence stage of a two-stage eval (is the category there? boxes are "
              "asked unless the answer is no): its accuracy, precision and recall"] if gated else []
    return "\n".join([*lines, *_notes(rows), *legend])


def _notes(rows: list[Row]) -> list[str]:
    """One line per paper setting shown, then each note once with the measured rows it concerns."""
    notes: dict[str, list[str]] = {}
    for r in rows:
        if r.kind == "paper":
            notes.setdefault(f"paper: {r.table} ({r.setting})", [])
            if r.note:
                notes.setdefault(f"  {r.note}", [])
        elif r.note:
            notes.setdefault(r.note, []).append(r.label)
    return [f"{', '.join(labels)}: {note}" if labels else note for note, labels in notes.items()]
