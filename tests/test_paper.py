"""The paper's figures: transcribed exactly, found for every preset, printed beside a result."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from visualrft_lite import paper
from visualrft_lite.paper import NoFigure, Setting, lookup, model_label, paper_block, paper_record, setting_for_preset

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "presets"
REFERENCE = ROOT / "docs" / "paper-tables.md"  # the paper's tables as markdown, typed apart from paper.py


def reference_tables() -> dict[str, str]:
    """docs/paper-tables.md cut at its '## Table N' headings: {"Table 2": text, ...}."""
    parts = re.split(r"^## (Table \d+)\b.*$", REFERENCE.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def rows(section: str) -> list[list[str]]:
    """A markdown table's rows (header first) as stripped cells, without the |---| line."""
    out = []
    for line in section.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[\s|:-]+\|", line.strip()):
            out.append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


def numbers(cell: str) -> list[float]:
    return [float(v) for v in re.findall(r"\d+\.\d+", cell)]


# ----------------------------------------------------------------------------- the transcription

COLUMNS = {"average": "classification", "Flowers102": "flowers", "Pets37": "pets", "FGVC-Aircraft": "aircraft",
           "Cars196": "cars"}


def test_table_2_is_transcribed_exactly():
    header, *body = rows(reference_tables()["Table 2"])
    parsed: dict[str, tuple[float, dict[int, tuple[float, float]]]] = {}
    assert body[0][0] == "baseline"
    baseline = {column: float(value) for column, value in zip(header[1:], body[0][1:])}
    cells: dict[tuple[str, int, str], float] = {}
    for row in body[1:]:
        shots, kind = re.fullmatch(r"(\d+)-shot (SFT|RFT)", row[0]).groups()
        for column, value in zip(header[1:], row[1:]):
            cells[COLUMNS[column], int(shots), kind] = float(value)
    for column, bench in COLUMNS.items():
        by_shots = {k: (cells[bench, k, "SFT"], cells[bench, k, "RFT"]) for (b, k, _) in cells if b == bench}
        parsed[bench] = (baseline[column], by_shots)
    assert parsed == paper.TABLE_2


def test_table_3_is_transcribed_exactly():
    header, *body = rows(reference_tables()["Table 3"])
    parsed = {}
    for row in body:
        model, base, *by_shots = row
        figures = {int(re.match(r"(\d+)-shot", h).group(1)): tuple(numbers(cell))
                   for h, cell in zip(header[2:], by_shots) if numbers(cell)}
        parsed[model] = (float(base), figures)
    assert parsed == paper.TABLE_3


def test_table_4_is_transcribed_exactly_in_its_category_order():
    section = reference_tables()["Table 4"]
    order = re.search(r"Categories in order: (.+)\.", section).group(1).split(", ")
    assert tuple(order) == paper.LVIS_RARE_6
    header, *body = rows(section)
    assert header == ["model", "baseline", "SFT", "RFT"]
    parsed = {row[0]: {"baseline": tuple(numbers(row[1])), "sft": tuple(numbers(row[2])), "rft": tuple(numbers(row[3]))}
              for row in body}
    assert parsed == paper.TABLE_4


@pytest.mark.parametrize("table, data", [("Table 6", paper.TABLE_6), ("Table 7", paper.TABLE_7)])
def test_tables_6_and_7_are_transcribed_exactly(table, data):
    header, *body = rows(reference_tables()[table])
    parsed = {}
    for row in body:
        model = re.match(r"(Qwen2-VL-\dB) baseline / SFT / RFT", row[0]).group(1)
        parsed[model] = {metric: tuple(numbers(cell)) for metric, cell in zip(header[1:], row[1:])}
    assert parsed == data


def test_table_8_is_transcribed_exactly():
    section = reference_tables()["Table 8"]
    found = re.findall(r"(Qwen2-VL-\dB) (\d+\.\d) / SFT (\d+\.\d) / RFT (\d+\.\d)", section)
    assert {model: tuple(map(float, figures)) for model, *figures in found} == paper.TABLE_8
    assert dict((k, float(v)) for k, v in re.findall(r"(GroundingDINO-B) (\d+\.\d)", section)) == paper.TABLE_8_OTHERS


def test_every_table_of_the_reference_has_a_benchmark_and_no_other():
    # Tables 2-4 and 6-8: the paper's results on the benchmarks vrft-lite's presets cover
    assert set(reference_tables()) == {bench.table for bench in paper.BENCHMARKS.values()}


# ----------------------------------------------------------------------------- lookup


def test_lookup_finds_each_tables_figures():
    cases = [
        # (setting, table, (baseline, SFT, RFT))
        (Setting("flowers", shots=1), "Table 2", (54.8, 56.6, 70.8)),
        (Setting("classification", shots=4), "Table 2", (56.0, 55.6, 81.9)),
        (Setting("cars", shots=16), "Table 2", (56.8, 41.5, 95.3)),
        (Setting("coco-8cat", shots=2), "Table 3", (19.6, 21.0, 41.5)),
        (Setting("coco-8cat", paper.QWEN2_VL_7B, shots=4), "Table 3", (43.0, 44.1, 54.3)),
        # Table 4 prints per-category AP only: the mean is derived, (2.9+1.2+13.4+4.7+1.5+0.0)/6 = 3.95,
        # (7.0+7.6+34.1+4.7+6.3+0.0)/6 = 9.95, (9.1+19.6+42.2+20.4+14.5+10.9)/6 = 19.45
        (Setting("lvis-rare6", shots=10), "Table 4", (3.95, 9.95, 19.45)),
        (Setting("lisa", metric="mIoU val"), "Table 6", (30.1, 29.7, 34.4)),
        (Setting("lisa", paper.QWEN2_VL_7B), "Table 6", (40.4, 39.1, 43.9)),
        (Setting("coco-ov"), "Table 7", (9.8, 13.6, 31.3)),
        (Setting("coco-ov", paper.QWEN2_VL_7B, metric="mAP all"), "Table 7", (19.2, 19.0, 27.4)),
        (Setting("lvis-ov", paper.QWEN2_VL_7B), "Table 8", (15.7, 24.0, 30.4)),
    ]
    for setting, table, triple in cases:
        f = lookup(setting)
        assert f, setting
        assert (f.table, (f.baseline, f.sft, f.rft)) == (table, pytest.approx(triple)), setting


def test_table_4_keeps_its_per_category_figures_and_says_the_mean_is_derived():
    f = lookup(Setting("lvis-rare6", paper.QWEN2_VL_7B, shots=10))
    assert f.per_category["kitchen_table"] == (14.5, 49.7, 70.6)
    assert list(f.per_category) == list(paper.LVIS_RARE_6)
    assert "mean of the 6" in f.derived


@pytest.mark.parametrize("setting, needle", [
    # Table 2 has no 7B row
    (Setting("pets", paper.QWEN2_VL_7B, shots=1), "Qwen2-VL-2B only"),
    # the paper evaluates Qwen2-VL only
    (Setting("coco-8cat", "Qwen2.5-VL-3B", shots=2), "not Qwen2.5-VL-3B"),
    (Setting("lisa", "Qwen3-VL-2B"), "not Qwen3-VL-2B"),
    # Table 4 is about 10 shots
    (Setting("lvis-rare6", shots=5), "10 shots only"),
])
def test_no_figure_says_why(setting, needle):
    f = lookup(setting)
    assert isinstance(f, NoFigure) and not f
    assert needle in f.reason


def test_coco_7b_outside_4_shots_has_the_baseline_and_says_why_the_rest_is_missing():
    # Table 3's 7B row prints the baseline (any shots) and SFT / RFT at 4 shots only
    for shots in (1, 2, 8, 16):
        f = lookup(Setting("coco-8cat", paper.QWEN2_VL_7B, shots=shots))
        assert (f.baseline, f.sft, f.rft) == (43.0, None, None)
        assert "at 4 shots only" in f.missing


@pytest.mark.parametrize("kwargs, needle", [
    ({"benchmark": "imagenet"}, "unknown benchmark"),
    ({"benchmark": "lisa", "metric": "mAP"}, "no metric"),
    ({"benchmark": "coco-8cat"}, "say how many shots"),
])
def test_a_setting_that_cannot_exist_is_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Setting(**kwargs)


@pytest.mark.parametrize("name, label", [
    ("Qwen/Qwen2-VL-2B-Instruct", "Qwen2-VL-2B"),
    ("Qwen/Qwen2-VL-7B-Instruct", "Qwen2-VL-7B"),
    ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL-3B"),
    ("Qwen/Qwen3-VL-2B-Instruct", "Qwen3-VL-2B"),
    ("/models/qwen2-vl-7b-instruct/", "Qwen2-VL-7B"),  # a local copy keeps its family in the folder name
    ("exported", None),  # a merged model's folder says nothing
    ("vrft-lite/tiny-qwen2-vl", None),  # the tests' tiny model is no size of the paper
])
def test_model_label(name, label):
    assert model_label(name) == label


# ----------------------------------------------------------------------------- presets

FULL = "baseline, SFT and Visual-RFT"
BASELINE_ONLY = "baseline only"
NONE = "no published figure"


def expected_figures(name: str) -> str:
    """What the paper publishes for each shipped preset, written out by hand."""
    if name == "demo" or "qwen2.5-vl" in name or "qwen3-vl" in name or "qwen3.5" in name:
        return NONE
    if re.fullmatch(r"coco-8cat-(1|2|8|16)shot-7b", name):
        return BASELINE_ONLY  # Table 3: 7B at 4 shots only
    return FULL


def test_every_shipped_preset_maps_to_a_setting_or_says_why_not():
    names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    assert len(names) == 48  # a new preset must be placed in the paper's tables here
    for name in names:
        setting = setting_for_preset(name)
        figures = lookup(setting) if isinstance(setting, Setting) else setting
        if not figures:
            assert figures.reason, name
            kind = NONE
        elif None in (figures.baseline, figures.sft, figures.rft):
            assert figures.baseline is not None and figures.missing, name
            kind = BASELINE_ONLY
        else:
            kind = FULL
        assert kind == expected_figures(name), name


TASK_OF_TABLE = {"Table 2": "classify", "Table 3": "detect", "Table 4": "detect", "Table 6": "ground",
                 "Table 7": "detect", "Table 8": "detect"}  # what each of the paper's tables measures


def test_each_presets_setting_agrees_with_what_the_preset_trains():
    # the name is mapped, so check it against the file: task, shots, model and categories
    categories = {"coco-8cat": ["bus", "train", "fire hydrant", "stop sign", "cat", "dog", "bed", "toilet"],
                  "lvis-rare6": list(paper.LVIS_RARE_6)}
    for path in sorted(PRESETS.glob("*.yaml")):
        setting = setting_for_preset(path.stem)
        if not isinstance(setting, Setting):
            continue
        cfg = yaml.safe_load(path.read_text())
        bench = paper.BENCHMARKS[setting.benchmark]
        assert cfg["data"]["task"] == TASK_OF_TABLE[bench.table], path.stem
        assert setting.model == model_label(cfg["model"]["name"]), path.stem
        if bench.few_shot:
            assert setting.shots == cfg["data"]["shots"], path.stem
        if setting.benchmark in categories:
            assert cfg["data"]["categories"] == categories[setting.benchmark], path.stem


def test_setting_for_preset_takes_the_model_a_run_used():
    # --set model.name=Qwen/Qwen2-VL-7B-Instruct on a 2B preset is the 7B setting; a local
    # folder says nothing about the size, so the preset's model stands
    assert setting_for_preset("lisa-grounding", "Qwen/Qwen2-VL-7B-Instruct").model == paper.QWEN2_VL_7B
    assert setting_for_preset("lisa-grounding", "exported").model == paper.QWEN2_VL_2B


def test_a_name_that_is_no_setting_is_no_figure():
    assert "not one of the paper's settings" in setting_for_preset("my-own-run").reason
    assert "synthetic" in setting_for_preset("demo").reason


# ----------------------------------------------------------------------------- beside a result


def test_paper_block_prints_percent_beside_the_measured_fraction():
    # metrics.json holds 0.234; the paper's tables and this line speak percent
    lines = paper_block(Setting("coco-8cat", shots=2), {"mAP": 0.234, "accuracy": 0.9})
    assert lines == ["Table 3 (COCO 8 categories, 2-shot, Qwen2-VL-2B, mAP): "
                     "baseline 19.6, SFT 21.0, Visual-RFT 41.5; measured 23.4"]


def test_paper_block_without_a_measurement_or_a_figure():
    assert paper_block(Setting("flowers", shots=1), {})[0].endswith("Visual-RFT 70.8; measured -")
    assert paper_block(setting_for_preset("flowers-1shot-qwen3-vl-2b"), {"accuracy": 0.5}) == [
        "paper: no published figure (the paper evaluates Qwen2-VL-2B and Qwen2-VL-7B only, not Qwen3-VL-2B)"]
    missing = paper_block(Setting("coco-8cat", paper.QWEN2_VL_7B, shots=2), {"mAP": 0.5})
    assert missing[0].startswith("Table 3 (COCO 8 categories, 2-shot, Qwen2-VL-7B, mAP): baseline 43.0, SFT -, "
                                 "Visual-RFT -; measured 50.0")
    assert "at 4 shots only" in missing[1]


def test_paper_block_for_lvis_lists_each_category_beside_ours():
    measured = {"mAP": 0.2, "per_category": {"die": {"AP": 0.25}, "papaya": {"AP": None}}}
    lines = paper_block(Setting("lvis-rare6", shots=10), measured)
    assert lines[0].endswith("baseline 3.95, SFT 9.95, Visual-RFT 19.45; measured 20.0")
    assert "  AP die: baseline 1.2, SFT 7.6, Visual-RFT 19.6; measured 25.0" in lines
    assert "  AP papaya: baseline 1.5, SFT 6.3, Visual-RFT 14.5; measured -" in lines


def test_paper_block_for_table_8_names_the_other_method():
    lines = paper_block(Setting("lvis-ov"), {"mAP": 0.1})
    assert "  also in Table 8: GroundingDINO-B 23.9" in lines


def test_paper_record_is_fractions_like_the_rest_of_metrics_json():
    record = paper_record(Setting("coco-8cat", shots=2), {"mAP": 0.234})
    assert record["table"] == "Table 3" and record["unit"] == "fraction"
    # 19.6 % -> 0.196, 21.0 % -> 0.21, 41.5 % -> 0.415; the measured value is passed through
    assert (record["baseline"], record["sft"], record["rft"], record["measured"]) == pytest.approx(
        (0.196, 0.21, 0.415, 0.234))
    assert record["setting"] == {"benchmark": "coco-8cat", "model": "Qwen2-VL-2B", "shots": 2, "metric": "mAP"}
    assert paper.setting_from_record(record) == Setting("coco-8cat", shots=2)


def test_paper_record_without_a_figure_keeps_the_reason_and_the_setting():
    record = paper_record(setting_for_preset("coco-8cat-2shot-qwen2.5-vl-3b"), {"mAP": 0.3})
    assert record["table"] is None and "Qwen2.5-VL-3B" in record["reason"]
    assert record["setting"]["model"] == "Qwen2.5-VL-3B"
    assert paper_record(setting_for_preset("demo"), {}) == {
        "table": None, "reason": "demo trains on synthetic shapes: no setting of the paper"}


def test_paper_record_for_lvis_carries_per_category_fractions():
    record = paper_record(Setting("lvis-rare6", shots=10), {"per_category": {"omelet": {"AP": 0.3}}})
    # omelet: 4.7 / 4.7 / 20.4 %
    assert record["per_category"]["omelet"] == pytest.approx({"baseline": 0.047, "sft": 0.047, "rft": 0.204,
                                                              "measured": 0.3})
    assert record["measured"] is None and "derived" in record
