"""The Visual-RFT paper's published figures, and where each preset stands among them.

    Setting          a benchmark, a model, a shot count and a metric: one cell group of a table
    lookup           Setting -> Figures (baseline / SFT / Visual-RFT, the table's name) or NoFigure
    setting_for_preset   a shipped preset's name -> its Setting (or NoFigure with the reason)
    paper_block / paper_record   what `eval` prints beside a result, and its metrics.json entry

The figures are the paper's (Liu et al. 2025, "Visual-RFT: Visual Reinforcement Fine-Tuning",
arXiv 2503.01785), Tables 2, 3, 4, 6, 7 and 8, transcribed exactly and kept in percent as
printed; vrft-lite's metrics are fractions, so everything that meets a measured value goes
through `percent` / `fraction`. "baseline" is the model before any fine-tuning, "SFT" the
supervised baseline on the same data, "Visual-RFT" the paper's method. The paper evaluates
Qwen2-VL-2B and -7B only.

Pure: stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

QWEN2_VL_2B = "Qwen2-VL-2B"
QWEN2_VL_7B = "Qwen2-VL-7B"
PAPER_MODELS = (QWEN2_VL_2B, QWEN2_VL_7B)

Triple = tuple[float | None, float | None, float | None]
"""(baseline, SFT, Visual-RFT) in percent; None where the paper prints no figure."""

# ----------------------------------------------------------------------------- the tables

# Table 2: fine-grained classification accuracy, Qwen2-VL-2B only.
# benchmark -> (baseline, {shots: (SFT, Visual-RFT)}). The baseline does not depend on shots.
# Cars196's baseline is not legible in the source; 56.8 follows from the RFT row and its
# printed gain, and matches the average column.
TABLE_2: dict[str, tuple[float, dict[int, tuple[float, float]]]] = {
    "classification": (56.0, {1: (51.7, 80.3), 2: (58.8, 83.5), 4: (55.6, 81.9), 8: (60.3, 85.1), 16: (64.0, 85.3)}),
    "flowers": (54.8, {1: (56.6, 70.8), 2: (60.3, 75.8), 4: (58.5, 71.4), 8: (59.6, 77.7), 16: (66.8, 79.2)}),
    "pets": (66.4, {1: (54.7, 84.1), 2: (65.6, 87.5), 4: (55.5, 86.1), 8: (71.4, 90.2), 16: (71.6, 87.1)}),
    "aircraft": (45.9, {1: (65.3, 72.5), 2: (68.9, 75.3), 4: (67.9, 74.8), 8: (69.2, 75.9), 16: (76.1, 79.4)}),
    "cars": (56.8, {1: (30.0, 93.8), 2: (40.2, 95.4), 4: (40.5, 95.3), 8: (40.9, 96.5), 16: (41.5, 95.3)}),
}

# Table 3: COCO few-shot detection, 8 categories, mAP. model -> (baseline, {shots: (SFT, RFT)});
# the 7B row has figures at 4 shots only.
TABLE_3: dict[str, tuple[float, dict[int, tuple[float, float]]]] = {
    QWEN2_VL_2B: (19.6, {1: (19.5, 33.6), 2: (21.0, 41.5), 4: (25.2, 40.6), 8: (30.2, 47.4), 16: (31.3, 46.8)}),
    QWEN2_VL_7B: (43.0, {4: (44.1, 54.3)}),
}

# Table 4: LVIS few-shot (about 10 shots), 6 rare categories, AP per category in this order.
LVIS_RARE_6 = ("horse_buggy", "die", "kitchen_table", "omelet", "papaya", "stepladder")
TABLE_4: dict[str, dict[str, tuple[float, ...]]] = {
    QWEN2_VL_2B: {"baseline": (2.9, 1.2, 13.4, 4.7, 1.5, 0.0),
                  "sft": (7.0, 7.6, 34.1, 4.7, 6.3, 0.0),
                  "rft": (9.1, 19.6, 42.2, 20.4, 14.5, 10.9)},
    QWEN2_VL_7B: {"baseline": (19.7, 21.9, 14.5, 18.1, 18.5, 0.0),
                  "sft": (26.9, 21.9, 49.7, 29.2, 25.2, 12.7),
                  "rft": (26.2, 27.8, 70.6, 23.5, 21.2, 29.3)},
}
LVIS_FEW_SHOTS = 10

# Table 6: LISA reasoning grounding (239 training images). model -> metric -> (baseline, SFT, RFT).
TABLE_6: dict[str, dict[str, tuple[float, float, float]]] = {
    QWEN2_VL_2B: {"mIoU test": (26.9, 28.3, 37.6), "mIoU val": (30.1, 29.7, 34.4), "gIoU test": (25.3, 25.3, 34.4)},
    QWEN2_VL_7B: {"mIoU test": (40.4, 39.1, 43.9), "mIoU val": (45.2, 43.9, 47.1), "gIoU test": (38.0, 37.2, 43.7)},
}

# Table 7: open-vocabulary COCO (train on 65 base classes, test on 15 novel).
TABLE_7: dict[str, dict[str, tuple[float, float, float]]] = {
    QWEN2_VL_2B: {"mAP novel": (9.8, 13.6, 31.3), "mAP base": (6.0, 7.8, 20.6), "mAP all": (6.7, 8.9, 22.6)},
    QWEN2_VL_7B: {"mAP novel": (26.3, 25.7, 35.8), "mAP base": (17.5, 17.5, 25.4), "mAP all": (19.2, 19.0, 27.4)},
}

# Table 8: open-vocabulary LVIS (train on COCO's 65 base classes, test on 13 rare LVIS), mAP.
TABLE_8: dict[str, tuple[float, float, float]] = {QWEN2_VL_2B: (2.7, 7.6, 20.7), QWEN2_VL_7B: (15.7, 24.0, 30.4)}
TABLE_8_OTHERS = {"GroundingDINO-B": 23.9}


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of the paper: where its figures are and how vrft-lite measures them."""

    title: str  # as a caption names it
    table: str
    metrics: tuple[str, ...]  # the paper's metric names; the first is the one a preset is scored on
    few_shot: bool  # figures depend on the number of shots


BENCHMARKS: dict[str, Benchmark] = {
    "classification": Benchmark("fine-grained classification, average of 4 datasets", "Table 2", ("accuracy",), True),
    "flowers": Benchmark("Flowers102", "Table 2", ("accuracy",), True),
    "pets": Benchmark("Pets37", "Table 2", ("accuracy",), True),
    "aircraft": Benchmark("FGVC-Aircraft", "Table 2", ("accuracy",), True),
    "cars": Benchmark("Cars196", "Table 2", ("accuracy",), True),
    "coco-8cat": Benchmark("COCO 8 categories", "Table 3", ("mAP",), True),
    "lvis-rare6": Benchmark("LVIS 6 rare categories", "Table 4", ("mAP",), True),
    "lisa": Benchmark("LISA reasoning grounding", "Table 6", ("mIoU test", "mIoU val", "gIoU test"), False),
    "coco-ov": Benchmark("open-vocabulary COCO, 15 novel categories", "Table 7",
                         ("mAP novel", "mAP base", "mAP all"), False),
    "lvis-ov": Benchmark("open-vocabulary LVIS, 13 rare categories", "Table 8", ("mAP",), False),
}

MEASURED_KEY = {"accuracy": "accuracy", "mAP": "mAP", "mAP novel": "mAP", "mAP base": "mAP", "mAP all": "mAP",
                "mIoU test": "mIoU", "mIoU val": "mIoU"}
"""The paper's metric -> the metrics.json key that measures it (gIoU is not one of vrft-lite's)."""


@dataclass(frozen=True)
class Setting:
    """One place in the paper's tables: benchmark (a key of BENCHMARKS), model, shots, metric."""

    benchmark: str
    model: str = QWEN2_VL_2B  # "Qwen2-VL-2B", "Qwen2-VL-7B", or another model's label
    shots: int | None = None  # few-shot benchmarks only
    metric: str | None = None  # None: the benchmark's first metric

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {self.benchmark!r}; one of {', '.join(BENCHMARKS)}")
        bench = BENCHMARKS[self.benchmark]
        if self.metric is None:
            object.__setattr__(self, "metric", bench.metrics[0])
        elif self.metric not in bench.metrics:
            raise ValueError(f"{self.benchmark} has no metric {self.metric!r}; one of {', '.join(bench.metrics)}")
        if bench.few_shot and self.shots is None:
            raise ValueError(f"{self.benchmark} is few-shot: say how many shots")

    @property
    def caption(self) -> str:
        """"COCO 8 categories, 2-shot, Qwen2-VL-2B, mAP"."""
        bench = BENCHMARKS[self.benchmark]
        shots = [f"{self.shots}-shot"] if bench.few_shot else []
        return ", ".join([bench.title, *shots, self.model, str(self.metric)])


@dataclass(frozen=True)
class Figures:
    """The paper's figures for a Setting, in percent; a None figure has its reason in `missing`."""

    setting: Setting
    table: str
    baseline: float | None
    sft: float | None
    rft: float | None
    per_category: dict[str, Triple] = field(default_factory=dict)  # Table 4: category -> (baseline, SFT, RFT)
    others: dict[str, float] = field(default_factory=dict)  # other methods the table prints (Table 8)
    missing: str = ""  # why a figure is None
    derived: str = ""  # how a figure the table does not print was computed from the ones it does


@dataclass(frozen=True)
class NoFigure:
    """The paper has no figure for this; `reason` says why. False in a boolean test."""

    reason: str

    def __bool__(self) -> bool:
        return False


# ----------------------------------------------------------------------------- lookup


def lookup(setting: Setting) -> Figures | NoFigure:
    """The paper's baseline / SFT / Visual-RFT figures for `setting` (percent), or why there are none.

    >>> f = lookup(Setting("coco-8cat", shots=2))
    >>> f.table, f.baseline, f.sft, f.rft
    ('Table 3', 19.6, 21.0, 41.5)
    >>> lookup(Setting("flowers", "Qwen2-VL-7B", shots=1)).reason
    'Table 2 reports fine-grained classification for Qwen2-VL-2B only'
    """
    bench = BENCHMARKS[setting.benchmark]
    if setting.model not in PAPER_MODELS:
        return NoFigure(f"the paper evaluates {QWEN2_VL_2B} and {QWEN2_VL_7B} only, not {setting.model}")
    if bench.table == "Table 2":
        if setting.model != QWEN2_VL_2B:
            return NoFigure(f"Table 2 reports fine-grained classification for {QWEN2_VL_2B} only")
        return _shot_figures(setting, *TABLE_2[setting.benchmark], "Table 2")
    if bench.table == "Table 3":
        return _shot_figures(setting, *TABLE_3[setting.model], "Table 3")
    if bench.table == "Table 4":
        if setting.shots != LVIS_FEW_SHOTS:
            return NoFigure(f"Table 4 reports LVIS at about {LVIS_FEW_SHOTS} shots only, not {setting.shots}")
        rows = TABLE_4[setting.model]
        per_category = {name: (rows["baseline"][k], rows["sft"][k], rows["rft"][k]) for k, name in enumerate(LVIS_RARE_6)}
        means = [_mean_of_tenths(rows[which]) for which in ("baseline", "sft", "rft")]
        return Figures(setting, "Table 4", *means, per_category=per_category,
                       derived="mAP is the mean of the 6 per-category figures; Table 4 prints only those")
    if bench.table == "Table 6":
        return Figures(setting, "Table 6", *TABLE_6[setting.model][str(setting.metric)])
    if bench.table == "Table 7":
        return Figures(setting, "Table 7", *TABLE_7[setting.model][str(setting.metric)])
    return Figures(setting, "Table 8", *TABLE_8[setting.model], others=dict(TABLE_8_OTHERS))


def _shot_figures(setting: Setting, baseline: float, by_shots: dict[int, tuple[float, float]], table: str) -> Figures:
    """Tables 2 and 3: the baseline holds for any shot count; SFT / RFT only at the shots printed."""
    if setting.shots in by_shots:
        return Figures(setting, table, baseline, *by_shots[setting.shots])
    printed = ", ".join(str(k) for k in sorted(by_shots))
    return Figures(setting, table, baseline, None, None,
                   missing=f"{table} has SFT / Visual-RFT figures for {setting.model} at {printed} shots only")


def _mean_of_tenths(values: tuple[float, ...]) -> float:
    """The mean of one-decimal figures without binary drift: (2.9+1.2+13.4+4.7+1.5+0.0)/6 = 3.95."""
    return round(sum(round(v * 10) for v in values) / len(values) / 10, 4)


# ----------------------------------------------------------------------------- presets

MODEL_SUFFIXES = {"": QWEN2_VL_2B, "-7b": QWEN2_VL_7B, "-qwen2.5-vl-3b": "Qwen2.5-VL-3B", "-qwen3-vl-2b": "Qwen3-VL-2B",
                  "-qwen3.5-2b": "Qwen3.5-2B"}
"""A preset name's model suffix (tools/make_presets.py) -> the model's label."""

_SUFFIX = "(?P<suffix>" + "|".join(re.escape(s) for s in MODEL_SUFFIXES if s) + ")?"
_PRESET_PATTERNS = [  # name -> (benchmark, shots)
    (re.compile(rf"(?P<bench>flowers|pets|aircraft|cars)-(?P<shots>\d+)shot{_SUFFIX}"), None),
    (re.compile(rf"coco-8cat-(?P<shots>\d+)shot{_SUFFIX}"), "coco-8cat"),
    (re.compile(rf"lvis-rare6-(?P<shots>\d+)shot{_SUFFIX}"), "lvis-rare6"),
    (re.compile(rf"lisa-grounding{_SUFFIX}"), "lisa"),
    (re.compile(rf"coco-ov-base65{_SUFFIX}"), "coco-ov"),
    (re.compile(rf"lvis-ov-rare13{_SUFFIX}"), "lvis-ov"),
]


def model_label(name: str | None) -> str | None:
    """A checkpoint's name as the tables call it; None when it is not one of the Qwen VL families.

    >>> model_label("Qwen/Qwen2-VL-7B-Instruct"), model_label("Qwen/Qwen2.5-VL-3B-Instruct"), model_label("runs/x/merged")
    ('Qwen2-VL-7B', 'Qwen2.5-VL-3B', None)
    >>> model_label("Qwen/Qwen3.5-2B")  # Qwen3.5 is a VL model without "VL" in its name
    'Qwen3.5-2B'
    """
    if not name:
        return None
    base = str(name).rstrip("/").rsplit("/", 1)[-1]
    m = re.match(r"(qwen[\d.]*)-vl-(\d+(?:\.\d+)?b)", base, re.IGNORECASE)
    if m:
        return f"Qwen{m.group(1)[4:]}-VL-{m.group(2).upper()}"
    m = re.match(r"qwen3\.5-(\d+(?:\.\d+)?b)", base, re.IGNORECASE)
    return f"Qwen3.5-{m.group(1).upper()}" if m else None


def setting_for_preset(name: str, model: str | None = None) -> Setting | NoFigure:
    """The paper's setting a preset reproduces (NoFigure with the reason when it has none).

    `model` (a hub id or local path) replaces the preset's model when it names a Qwen VL
    checkpoint, for runs made with `--set model.name=...`; a local folder keeps the preset's.

    >>> setting_for_preset("coco-8cat-4shot-7b")
    Setting(benchmark='coco-8cat', model='Qwen2-VL-7B', shots=4, metric='mAP')
    >>> setting_for_preset("demo").reason
    'demo trains on synthetic shapes: no setting of the paper'
    """
    if name == "demo":
        return NoFigure("demo trains on synthetic shapes: no setting of the paper")
    for pattern, benchmark in _PRESET_PATTERNS:
        m = pattern.fullmatch(name)
        if m:
            break
    else:
        return NoFigure(f"'{name}' is not one of the paper's settings (vrft-lite presets list names them)")
    groups = m.groupdict()
    label = model_label(model) or MODEL_SUFFIXES[groups.get("suffix") or ""]
    shots = int(groups["shots"]) if groups.get("shots") else None
    return Setting(benchmark or groups["bench"], label, shots)


# ----------------------------------------------------------------------------- beside a result


def percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(100 * fraction, 6)


def fraction(pct: float | None) -> float | None:
    return None if pct is None else round(pct / 100, 6)


def _fmt(pct: float | None) -> str:
    """Paper figures as printed (one decimal); a derived mean keeps its second decimal."""
    if pct is None:
        return "-"
    return f"{pct:.1f}" if abs(pct * 10 - round(pct * 10)) < 1e-6 else f"{pct:.2f}"


def measured_value(setting: Setting, measured: dict[str, Any]) -> float | None:
    """The fraction in a metrics.json dict that measures `setting`'s metric (None if it has none)."""
    key = MEASURED_KEY.get(str(setting.metric))
    value = measured.get(key) if key else None
    return float(value) if isinstance(value, (int, float)) else None


def _measured_category(measured: dict[str, Any], name: str) -> float | None:
    entry = (measured.get("per_category") or {}).get(name)
    value = entry.get("AP") if isinstance(entry, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def paper_block(setting: Setting | NoFigure, measured: dict[str, Any]) -> list[str]:
    """The lines `eval` prints beside a result: the paper's figures for the setting and ours, in percent.

    >>> paper_block(Setting("coco-8cat", shots=2), {"mAP": 0.234})
    ['Table 3 (COCO 8 categories, 2-shot, Qwen2-VL-2B, mAP): baseline 19.6, SFT 21.0, Visual-RFT 41.5; measured 23.4']
    """
    figures = lookup(setting) if isinstance(setting, Setting) else setting
    if not figures:
        return [f"paper: no published figure ({figures.reason})"]
    ours = _fmt(percent(measured_value(figures.setting, measured)))
    lines = [f"{figures.table} ({figures.setting.caption}): baseline {_fmt(figures.baseline)}, SFT {_fmt(figures.sft)}, "
             f"Visual-RFT {_fmt(figures.rft)}; measured {ours}"]
    for name, (base, sft, rft) in figures.per_category.items():
        mine = _fmt(percent(_measured_category(measured, name)))
        lines.append(f"  AP {name}: baseline {_fmt(base)}, SFT {_fmt(sft)}, Visual-RFT {_fmt(rft)}; measured {mine}")
    if figures.others:
        lines.append("  also in " + figures.table + ": " + ", ".join(f"{k} {_fmt(v)}" for k, v in figures.others.items()))
    for note in (figures.missing, figures.derived):
        if note:
            lines.append(f"  ({note})")
    return lines


def paper_record(setting: Setting | NoFigure, measured: dict[str, Any]) -> dict[str, Any]:
    """The `paper` entry of metrics.json: the same figures as `paper_block`, as fractions like the rest.

    >>> paper_record(Setting("lisa"), {"mIoU": 0.3})["rft"]
    0.376
    """
    figures = lookup(setting) if isinstance(setting, Setting) else setting
    if not figures:
        return {"table": None, "reason": figures.reason,
                **({"setting": asdict(setting)} if isinstance(setting, Setting) else {})}
    record: dict[str, Any] = {
        "table": figures.table, "caption": figures.setting.caption, "setting": asdict(figures.setting),
        "unit": "fraction", "baseline": fraction(figures.baseline), "sft": fraction(figures.sft),
        "rft": fraction(figures.rft), "measured": measured_value(figures.setting, measured),
    }
    if figures.per_category:
        record["per_category"] = {
            name: {"baseline": fraction(b), "sft": fraction(s), "rft": fraction(r),
                   "measured": _measured_category(measured, name)}
            for name, (b, s, r) in figures.per_category.items()}
    if figures.others:
        record["others"] = {k: fraction(v) for k, v in figures.others.items()}
    for key in ("missing", "derived"):
        if getattr(figures, key):
            record[key] = getattr(figures, key)
    return record


def setting_from_record(record: dict[str, Any] | None) -> Setting | None:
    """The Setting a metrics.json `paper` entry was written for (None when it names none)."""
    raw = (record or {}).get("setting")
    if not isinstance(raw, dict):
        return None
    try:
        return Setting(**{k: raw.get(k) for k in ("benchmark", "model", "shots", "metric")})
    except (TypeError, ValueError):
        return None
