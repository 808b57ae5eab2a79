"""The paper's evaluation from the tool: the detection presets are two-stage, every eval and
held-out table of a paper preset prints the paper's figures beside ours, `compare` lays
several evaluations out with the paper's rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import assert_one_line_error, invoke

from visualrft_lite.config import load_config, with_model
from visualrft_lite.evaluate import metrics_table, paper_beside
from visualrft_lite.step_metrics import heldout_table

PRESETS = Path(__file__).resolve().parent.parent / "presets"


def test_the_detection_presets_evaluate_two_stage_and_no_other_does():
    for path in sorted(PRESETS.glob("*.yaml")):
        cfg = load_config(path.stem)
        assert cfg.eval.two_stage is (cfg.data.task == "detect"), path.stem


# ----------------------------------------------------------------------------- eval's lines


def test_a_paper_preset_prints_its_figures_beside_the_measured_one():
    metrics = {"n": 40, "mAP": 0.234, "protocol": "two-stage"}
    lines = paper_beside(metrics, load_config("coco-8cat-2shot"), data=None, of=40)
    # metrics.json's 0.234 is printed as 23.4 beside Table 3's percentages
    assert lines == ["Table 3 (COCO 8 categories, 2-shot, Qwen2-VL-2B, mAP): baseline 19.6, SFT 21.0, "
                     "Visual-RFT 41.5; measured 23.4"]
    assert metrics["paper"]["table"] == "Table 3" and "notes" not in metrics["paper"]
    assert (metrics["paper"]["baseline"], metrics["paper"]["sft"], metrics["paper"]["rft"]) == pytest.approx(
        (0.196, 0.21, 0.415))


def test_the_model_evaluated_picks_the_row():
    # --model Qwen/Qwen2-VL-7B-Instruct on the 2B preset: Table 3's 7B row at 4 shots
    cfg = with_model(load_config("coco-8cat-4shot"), name="Qwen/Qwen2-VL-7B-Instruct")
    [line] = paper_beside({"n": 8, "mAP": 0.5}, cfg, data=None, of=8)
    assert line.startswith("Table 3 (COCO 8 categories, 4-shot, Qwen2-VL-7B, mAP): baseline 43.0, SFT 44.1, "
                           "Visual-RFT 54.3; measured 50.0")


def test_what_makes_the_measurement_differ_from_the_papers_is_said():
    metrics = {"n": 50, "mAP": 0.3, "protocol": "one-stage"}
    lines = paper_beside(metrics, load_config("coco-8cat-2shot"), data="coco:mine.json", of=400)
    notes = ["measured on --data coco:mine.json, not the preset's eval split",
             "measured on 50 of the split's 400 records",
             "measured one-stage; the paper asks whether the category is present first: drop --one-stage"]
    assert lines[1:] == [f"  ({n})" for n in notes]
    assert metrics["paper"]["notes"] == notes


def test_a_paper_preset_without_a_figure_says_so_and_another_config_prints_nothing():
    metrics = {"n": 8, "mAP": 0.3}
    assert paper_beside(metrics, load_config("coco-8cat-2shot-qwen3-vl-2b"), data=None, of=8) == [
        "paper: no published figure (the paper evaluates Qwen2-VL-2B and Qwen2-VL-7B only, not Qwen3-VL-2B)"]
    demo = {"n": 8, "accuracy": 1.0}
    assert paper_beside(demo, load_config("demo"), data=None, of=8) == []
    assert demo["paper"] == {"table": None, "reason": "demo trains on synthetic shapes: no setting of the paper"}


def test_the_table_names_the_protocol_and_scores_the_presence_stage():
    metrics = {"task": "detect", "n": 3, "format_rate": 1.0, "mean_reward": 2.0, "mAP": 0.5, "AP50": 0.5, "AP75": 0.5,
               "per_category": {}, "ap_protocol": "coco", "protocol": "two-stage",
               "presence": {"n": 3, "yes": 2, "no": 1, "unclear": 0, "present": 2, "accuracy": 2 / 3, "precision": 0.5,
                            "recall": 0.5}}
    lines = metrics_table(metrics).splitlines()
    assert lines[1] == "two-stage: is it present? then boxes where it is (the paper's protocol)"
    assert "stage 1: 2 yes, 1 no, 0 unclear; 2 present" in lines
    # 2/3 -> 66.7, 1/2 -> 50.0 (percent)
    assert f"{'  presence accuracy':<30}{66.7:6.1f}" in lines and f"{'  presence recall':<30}{50.0:6.1f}" in lines
    one = {**metrics, "protocol": "one-stage"}
    del one["presence"]
    lines = metrics_table(one).splitlines()
    assert lines[1].startswith("one-stage: boxes asked for every record (--one-stage")
    assert not any(line.startswith(("stage 1", "  presence")) for line in lines)


def held(stage: str, step: int, value: float, metric: str = "mAP") -> dict:
    return {"step": step, "stage": stage, "n": 32, "format_rate": 1.0, "metric": metric, "accuracy": value,
            "reward": 1.0 + value}


def test_the_held_out_table_of_a_paper_preset_has_the_papers_figures_beneath():
    rows = [held("base", 0, 0.2), held("grpo", 200, 0.35)]
    lines = heldout_table(rows, preset="coco-8cat-2shot", model="Qwen/Qwen2-VL-2B-Instruct").splitlines()
    assert lines[2].startswith("before training") and lines[3].startswith("after GRPO")
    # the last row, 0.35, as 35.0 beside the paper's percentages
    assert lines[4] == ("Table 3 (COCO 8 categories, 2-shot, Qwen2-VL-2B, mAP): baseline 19.6, SFT 21.0, "
                        "Visual-RFT 41.5; measured 35.0")
    assert lines[5] == "  (measured: after GRPO, on 32 held-out records; `vrft-lite eval` scores the whole split)"
    # the demo (no setting of the paper) keeps its table as it was: four lines
    demo = [held("base", 0, 0.0, "accuracy"), held("grpo", 60, 1.0, "accuracy")]
    assert len(heldout_table(demo, preset="demo", model="tiny").splitlines()) == 4
    without = heldout_table(rows, preset="flowers-1shot-qwen3-vl-2b", model="Qwen/Qwen3-VL-2B-Instruct")
    assert without.splitlines()[-2].startswith("paper: no published figure")


# ----------------------------------------------------------------------------- vrft-lite compare


def write_eval(folder: Path, **metrics) -> Path:
    folder.mkdir(parents=True)
    base = {"task": "detect", "n": 24, "format_rate": 0.9, "headline": "mAP", "mAP": 0.25, "per_category": {},
            "model": "Qwen/Qwen2-VL-2B-Instruct", "adapter": None, "two_stage": True, "protocol": "two-stage",
            "preset": "coco-8cat-2shot"}
    (folder / "metrics.json").write_text(json.dumps({**base, **metrics}))
    return folder


def test_compare_prints_the_layout_of_table_3(tmp_path):
    base = write_eval(tmp_path / "base", presence={"accuracy": 0.75, "precision": 0.5, "recall": 1.0})
    grpo = write_eval(tmp_path / "grpo", mAP=0.4, adapter="runs/coco2/final", two_stage=False, protocol="one-stage")
    result = invoke("compare", base, grpo)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "detect, mAP (percent)"
    assert lines[1].split() == ["evaluation", "n", "mAP", "pres", "acc", "pres", "prec", "pres", "rec", "format"]
    rows = {line.split("  ")[0]: line.split() for line in lines[3:]}
    # 0.25 -> 25.0; presence 0.75 / 0.5 / 1.0 -> 75.0 / 50.0 / 100.0; format 0.9 -> 90.0
    assert rows["Qwen2-VL-2B-Instruct (base) two-stage"][-5:] == ["25.0", "75.0", "50.0", "100.0", "90.0"]
    assert rows["coco2 one-stage"][-5:] == ["40.0", "-", "-", "-", "90.0"]  # a one-stage eval has no presence stage
    assert rows["Table 3 Qwen2-VL-2B 2-shot Visual-RFT"][-5:] == ["41.5", "-", "-", "-", "-"]
    assert "paper: Table 3 (COCO 8 categories, 2-shot, Qwen2-VL-2B, mAP)" in lines


def test_compare_json_keeps_fractions(tmp_path):
    base = write_eval(tmp_path / "base", presence={"accuracy": 0.75, "precision": 0.5, "recall": 1.0})
    result = invoke("compare", base, "--json", "--preset", "coco-8cat-4shot")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows[0]["value"] == 0.25 and rows[0]["presence"] == {"accuracy": 0.75, "precision": 0.5, "recall": 1.0}
    assert [r["label"] for r in rows if r["kind"] == "paper"][1] == "Table 3 Qwen2-VL-2B 4-shot SFT"  # --preset wins


def test_compare_of_a_folder_that_is_neither_is_one_line(tmp_path):
    (tmp_path / "notes").mkdir()
    assert_one_line_error(invoke("compare", tmp_path / "notes"), "neither an eval output", "nor a run directory")
    assert_one_line_error(invoke("compare", tmp_path / "missing"), "does not exist")


# ----------------------------------------------------------------------------- end to end, tiny model


@pytest.mark.slow
def test_a_detection_preset_evaluates_two_stage_and_a_later_eval_reuses_the_presence_answers(
        tiny_model_dir, tmp_path, capsys):
    from test_datasets import make_coco

    from visualrft_lite.evaluate import run_eval

    coco = make_coco(tmp_path / "coco")  # val2017: 3 images, one bus box
    overrides = [f"data.path={coco}", "data.categories=[bus, cat]", f"model.name={tiny_model_dir}", "model.quant=none",
                 "model.device=cpu", "model.min_pixels=3136", "model.max_pixels=12544", "eval.batch_size=4",
                 "eval.max_new_tokens=4"]
    runs = tmp_path / "runs"

    def evaluate(name: str, **kw):
        ev, out = run_eval(preset="coco-8cat-2shot", overrides=overrides, out=runs / name, **kw)
        return ev.metrics, out, capsys.readouterr().out

    first, out, printed = evaluate("eval-a")  # eval.two_stage: true, from the preset
    assert first["protocol"] == "two-stage" and first["presence"]["n"] == 6 and first["presence"]["reused"] == 0
    assert "two-stage: is it present?" in printed and "stage 1: reusing" not in printed
    assert "Table 3 (COCO 8 categories, 2-shot, Qwen2-VL-2B, mAP): baseline 19.6, SFT 21.0, Visual-RFT 41.5" in printed
    assert first["paper"]["table"] == "Table 3" and first["paper"]["measured"] == first["mAP"]
    presence = [json.loads(line) for line in (out / "presence.jsonl").read_text().splitlines()]
    assert len(presence) == 6 and {p["category"] for p in presence} == {"bus", "cat"}

    again, out_b, printed = evaluate("eval-b")
    assert again["presence"]["reused"] == 6
    assert f"stage 1: reusing 6 of 6 presence answers from {out.resolve()}" in printed
    rows = [json.loads(line) for line in (out_b / "predictions.jsonl").read_text().splitlines()]
    assert [r["presence_completion"] for r in rows] == [p["completion"] for p in presence]
    assert again["presence"]["key_hash"] == first["presence"]["key_hash"]

    forced, _, printed = evaluate("eval-b", force=True)
    assert forced["presence"]["reused"] == 0 and "stage 1: reusing" not in printed

    one, out_c, printed = evaluate("eval-c", two_stage=False)
    assert one["protocol"] == "one-stage" and "presence" not in one and not (out_c / "presence.jsonl").exists()
    assert "one-stage: boxes asked for every record" in printed and "(measured one-stage;" in printed
