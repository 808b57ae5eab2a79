"""`compare`: eval outputs and runs side by side, with the paper's rows for their setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from visualrft_lite.compare import compare, comparison_rows, comparison_table
from visualrft_lite.errors import UserError

QWEN2_2B = "Qwen/Qwen2-VL-2B-Instruct"


def write_eval(folder: Path, **metrics) -> Path:
    """A hand-made eval output: metrics.json with run_eval's keys (defaults: a 2B detection eval)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = {"task": "detect", "n": 40, "format_rate": 0.95, "mean_reward": 1.5, "headline": "mAP", "mAP": 0.25,
            "AP50": 0.4, "AP75": 0.2, "per_category": {}, "n_detections": 80, "model": QWEN2_2B, "adapter": None,
            "two_stage": False, "skipped": {}, "max_new_tokens": 256, "seconds": 10.0}
    (folder / "metrics.json").write_text(json.dumps({**base, **metrics}))
    return folder


def write_run(folder: Path, preset: str, heldout: list[dict] | None = None) -> Path:
    """A run directory: the config.yaml train writes for `preset`, and heldout.jsonl rows."""
    from visualrft_lite.config import load_config

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(load_config(preset, []).to_yaml())
    (folder / "final").mkdir(exist_ok=True)
    if heldout is not None:
        (folder / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in heldout))
    return folder


def held(stage: str, step: int, value: float, metric: str = "accuracy") -> dict:
    return {"step": step, "stage": stage, "n": 32, "format_rate": 1.0, "metric": metric, "accuracy": value,
            "reward": 1.0 + value}


def by_label(comparison) -> dict:
    return {row.label: row for row in comparison.rows}


# ----------------------------------------------------------------------------- eval outputs


def test_a_real_eval_output_compares_with_table_2(tmp_path):
    # metrics.json as evaluate.write_outputs writes it, from hand-made completions: 3 of 4 right
    from visualrft_lite.data.records import Record
    from visualrft_lite.evaluate import score_completions, write_outputs

    records = [Record(f"{k}.jpg", "classify", {"label": label}) for k, label in enumerate(["rose", "rose", "iris", "lily"])]
    answers = ["rose", "rose", "iris", "rose"]
    evaluation = score_completions(records, [f"<think>x</think><answer>{a}</answer>" for a in answers])
    evaluation.metrics.update({"model": QWEN2_2B, "adapter": str(tmp_path / "runs/flowers1/final"), "two_stage": False})
    out = tmp_path / "eval-flowers-1shot-20261201-101500"
    out.mkdir()
    write_outputs(evaluation, out)

    rows = by_label(compare([out]))
    assert rows["flowers1"].value == pytest.approx(0.75) and rows["flowers1"].format_rate == pytest.approx(1.0)
    # the eval folder's default name gives the preset: Table 2, Flowers102 1-shot
    assert rows["Table 2 Qwen2-VL-2B baseline"].value == pytest.approx(0.548)
    assert rows["Table 2 Qwen2-VL-2B 1-shot SFT"].value == pytest.approx(0.566)
    assert rows["Table 2 Qwen2-VL-2B 1-shot Visual-RFT"].value == pytest.approx(0.708)


def test_detection_rows_carry_per_category_columns_and_the_paper_in_percent(tmp_path):
    base = write_eval(tmp_path / "base", per_category={"bus": {"AP": 0.3, "n_gt": 5}, "cat": {"AP": 0.1, "n_gt": 2}},
                      two_stage=True)
    tuned = write_eval(tmp_path / "tuned", mAP=0.45, adapter="runs/coco2/final",
                       per_category={"bus": {"AP": 0.5}, "dog": {"AP": None}})
    c = compare([base, tuned], preset="coco-8cat-2shot")
    assert c.categories == ["bus", "cat", "dog"]  # union, in order of first appearance
    assert [r.label for r in c.rows] == ["Qwen2-VL-2B-Instruct (base) two-stage", "coco2",
                                         "Table 3 Qwen2-VL-2B baseline", "Table 3 Qwen2-VL-2B 2-shot SFT",
                                         "Table 3 Qwen2-VL-2B 2-shot Visual-RFT"]
    table = comparison_table(c)
    # 0.45 -> 45.0; the dog column of coco2 is measured as None -> "-"; the paper's 41.5 as printed
    assert "coco2" in table and "  45.0    50.0       -       -    95.0" in table
    assert "Table 3 Qwen2-VL-2B 2-shot Visual-RFT       -    41.5" in table
    assert "paper: Table 3 (COCO 8 categories, 2-shot, Qwen2-VL-2B, mAP)" in table
    # --json keeps fractions, like metrics.json
    rows = comparison_rows(c)
    assert rows[1]["value"] == 0.45 and rows[1]["per_category"] == {"bus": 0.5, "dog": None}
    assert rows[-1] == {**rows[-1], "kind": "paper", "value": 0.415, "table": "Table 3"}
    json.dumps(rows)  # JSON-ready


def test_the_setting_comes_from_what_the_eval_records(tmp_path):
    # a `paper` entry in metrics.json wins; then a `preset` key; then the adapter's run config
    recorded = write_eval(tmp_path / "a", paper={"table": "Table 3", "setting": {
        "benchmark": "coco-8cat", "model": "Qwen2-VL-7B", "shots": 4, "metric": "mAP"}})
    assert "Table 3 Qwen2-VL-7B 4-shot Visual-RFT" in by_label(compare([recorded]))
    named = write_eval(tmp_path / "b", preset="coco-8cat-16shot")
    assert "Table 3 Qwen2-VL-2B 16-shot SFT" in by_label(compare([named]))
    run = write_run(tmp_path / "runs" / "coco8", "coco-8cat-8shot")
    adapted = write_eval(tmp_path / "c", adapter=str(run / "final"))
    assert "Table 3 Qwen2-VL-2B 8-shot SFT" in by_label(compare([adapted]))


def test_an_eval_that_records_no_setting_asks_for_a_preset(tmp_path):
    folder = write_eval(tmp_path / "somewhere")
    c = compare([folder])
    assert [r.kind for r in c.rows] == ["eval"]
    assert "pass --preset NAME" in comparison_table(c)


def test_a_setting_without_figures_adds_no_paper_rows_and_says_why(tmp_path):
    folder = write_eval(tmp_path / "q25", model="Qwen/Qwen2.5-VL-3B-Instruct", preset="coco-8cat-2shot-qwen2.5-vl-3b")
    c = compare([folder])
    assert [r.kind for r in c.rows] == ["eval"]
    assert "no published figure: the paper evaluates Qwen2-VL-2B and Qwen2-VL-7B only, not Qwen2.5-VL-3B" in (
        c.rows[0].note)
    assert c.rows[0].note in comparison_table(c)


def test_two_shot_counts_share_one_baseline_row(tmp_path):
    # COCO 2-shot and 4-shot evals: the baseline (19.6) once, SFT / RFT rows for each
    two = write_eval(tmp_path / "two", preset="coco-8cat-2shot", adapter="runs/c2/final")
    four = write_eval(tmp_path / "four", preset="coco-8cat-4shot", adapter="runs/c4/final")
    labels = [r.label for r in compare([two, four]).rows if r.kind == "paper"]
    assert labels == ["Table 3 Qwen2-VL-2B baseline", "Table 3 Qwen2-VL-2B 2-shot SFT",
                      "Table 3 Qwen2-VL-2B 2-shot Visual-RFT", "Table 3 Qwen2-VL-2B 4-shot SFT",
                      "Table 3 Qwen2-VL-2B 4-shot Visual-RFT"]


def test_7b_coco_outside_4_shots_shows_the_baseline_and_why_no_more(tmp_path):
    folder = write_eval(tmp_path / "e", preset="coco-8cat-2shot-7b", model="Qwen/Qwen2-VL-7B-Instruct")
    c = compare([folder])
    assert [r.label for r in c.rows if r.kind == "paper"] == ["Table 3 Qwen2-VL-7B baseline"]
    assert "at 4 shots only" in comparison_table(c)


def test_lvis_paper_rows_fill_the_per_category_columns(tmp_path):
    folder = write_eval(tmp_path / "lvis", preset="lvis-rare6-10shot", mAP=0.2,
                        per_category={"die": {"AP": 0.3}, "omelet": {"AP": 0.1}})
    c = compare([folder])
    rft = by_label(c)["Table 4 Qwen2-VL-2B 10-shot Visual-RFT"]
    # Table 4, 2B Visual-RFT: die 19.6, omelet 20.4; the mean (19.45) is derived
    assert rft.per_category["die"] == pytest.approx(0.196) and rft.per_category["omelet"] == pytest.approx(0.204)
    assert rft.value == pytest.approx(0.1945)
    assert c.categories[:2] == ["die", "omelet"] and "horse_buggy" in c.categories
    assert "mean of the 6 per-category figures" in comparison_table(c)


def test_the_same_adapter_twice_is_told_apart_by_folder(tmp_path):
    a = write_eval(tmp_path / "full", adapter="runs/x/final", preset="coco-8cat-2shot")
    b = write_eval(tmp_path / "limit50", adapter="runs/x/final", preset="coco-8cat-2shot", n=50)
    labels = [r.label for r in compare([a, b]).rows if r.kind == "eval"]
    assert labels == ["x [full]", "x [limit50]"]


def test_a_checkpoint_adapter_is_labelled_with_its_step(tmp_path):
    folder = write_eval(tmp_path / "e", adapter="runs/coco4/checkpoints/step-100", preset="coco-8cat-4shot")
    assert compare([folder]).rows[0].label == "coco4 step-100"


def test_the_metrics_json_file_itself_is_accepted(tmp_path):
    folder = write_eval(tmp_path / "e", preset="coco-8cat-4shot")
    assert compare([folder / "metrics.json"]).rows[0].source == str(folder)


# ----------------------------------------------------------------------------- run directories


def test_a_run_without_an_eval_gives_one_row_per_held_out_stage(tmp_path):
    # the run's own held-out table: before training, after the warm-up, at the end
    run = write_run(tmp_path / "flowers1", "flowers-1shot",
                    [held("base", 0, 0.5), held("sft", 20, 0.6), held("grpo", 200, 0.8)])
    (run / "heldout.jsonl").write_text((run / "heldout.jsonl").read_text() + '{"step": 2')  # a half-written line
    c = compare([run])
    assert [(r.label, r.value) for r in c.rows if r.kind == "heldout"] == [
        ("flowers1 before training", 0.5), ("flowers1 after SFT (step 20)", 0.6), ("flowers1 after GRPO (step 200)", 0.8)]
    assert c.task == "classify" and c.metric == "accuracy"
    assert by_label(c)["Table 2 Qwen2-VL-2B 1-shot Visual-RFT"].value == pytest.approx(0.708)
    assert "eval.heldout records (32 of the eval split)" in comparison_table(c)


def test_a_run_prefers_its_newest_eval_output(tmp_path):
    run = write_run(tmp_path / "runs" / "coco4", "coco-8cat-4shot", [held("grpo", 200, 0.3, "mAP")])
    old = write_eval(run / "eval-old", mAP=0.31, adapter=str(run / "final"))
    new = write_eval(run / "eval-new", mAP=0.42, adapter=str(run / "final"))
    os.utime(old / "metrics.json", (1_000_000, 1_000_000))
    os.utime(new / "metrics.json", (2_000_000, 2_000_000))
    rows = compare([run]).rows
    assert (rows[0].kind, rows[0].value, rows[0].source) == ("eval", 0.42, str(new))
    assert "Table 3 Qwen2-VL-2B 4-shot SFT" in [r.label for r in rows]  # the run's preset gives the setting
    # an eval beside the run whose adapter came from it is newer still: it wins
    beside = write_eval(tmp_path / "runs" / "eval-coco-8cat-4shot-20261201-120000", mAP=0.5, adapter=str(run / "final"))
    os.utime(beside / "metrics.json", (3_000_000, 3_000_000))
    unrelated = write_eval(tmp_path / "runs" / "eval-other", mAP=0.9, adapter=str(tmp_path / "runs" / "other" / "final"))
    os.utime(unrelated / "metrics.json", (4_000_000, 4_000_000))
    assert compare([run]).rows[0].source == str(beside)


def test_the_run_model_names_the_setting(tmp_path):
    # a 7B LISA run from the 7B preset: Table 6's 7B rows
    run = write_run(tmp_path / "lisa7", "lisa-grounding-7b", [held("base", 0, 0.4, "mIoU"), held("grpo", 500, 0.45, "mIoU")])
    rows = by_label(compare([run]))
    assert rows["Table 6 Qwen2-VL-7B Visual-RFT"].value == pytest.approx(0.439)
    assert rows["lisa7 after GRPO (step 500)"].task == "ground"


# ----------------------------------------------------------------------------- mistakes


def test_a_path_that_is_neither_is_a_one_line_error(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(UserError, match="neither an eval output .* nor a run directory"):
        compare([tmp_path / "notes"])
    with pytest.raises(UserError, match="does not exist"):
        compare([tmp_path / "missing"])
    with pytest.raises(UserError, match="at least one"):
        compare([])


def test_evaluations_of_different_tasks_are_refused(tmp_path):
    detect = write_eval(tmp_path / "d", preset="coco-8cat-2shot")
    classify = write_eval(tmp_path / "c", task="classify", headline="accuracy", accuracy=0.5)
    with pytest.raises(UserError, match="cannot compare a detect evaluation .* with a classify one"):
        compare([detect, classify])


def test_a_broken_metrics_json_or_an_empty_run_is_a_user_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        compare([tmp_path / "bad"])
    write_eval(tmp_path / "notask", task=None)
    with pytest.raises(UserError, match="names no task"):
        compare([tmp_path / "notask"])
    run = write_run(tmp_path / "fresh", "flowers-1shot")
    with pytest.raises(UserError, match="without an eval output or held-out scores"):
        compare([run])
    # each message is one line (the CLI prints it as its one "Error:" line)
    for path in (tmp_path / "bad", tmp_path / "notask", run, tmp_path / "missing"):
        with pytest.raises(UserError) as caught:
            compare([path])
        assert "\n" not in str(caught.value)


def test_compare_and_paper_import_nothing_heavy():
    # pure modules: stdlib only at import (yaml only once a run's config is read)
    code = ("import sys, visualrft_lite.compare, visualrft_lite.paper; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'torch', 'yaml', 'PIL', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"
