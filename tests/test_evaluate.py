"""`vrft-lite eval`: the metrics are pure functions of (records, completions), checked against
hand-derived numbers and against pycocotools run directly on the COCO file; then one short
end-to-end run on the tiny model writes predictions.jsonl and metrics.json.
"""

from __future__ import annotations

import json

import pytest

from visualrft_lite.config import DataConfig
from visualrft_lite.data.records import Record
from visualrft_lite.data.sources import load_records
from visualrft_lite.errors import UserError
from visualrft_lite.rundir import prepare_output_dir
from visualrft_lite.answers import parse_yes_no
from visualrft_lite.evaluate import data_overrides, run_eval, score_completions
from visualrft_lite.tasks.classify import NO_ANSWER, OTHER


def answer(text: str) -> str:
    return f"<think>looking</think><answer>{text}</answer>"


def detection_answer(boxes: list[tuple[list[float], float]], size: tuple[int, int]) -> str:
    """A completion listing pixel boxes in Qwen2-VL's 0-1000 convention (floats: exact)."""
    w, h = size
    items = [f"{{'Position': [{x1 * 1000 / w!r}, {y1 * 1000 / h!r}, {x2 * 1000 / w!r}, {y2 * 1000 / h!r}], "
             f"'Confidence': {c!r}}}" for (x1, y1, x2, y2), c in boxes]
    return answer("[" + ", ".join(items) + "]" if items else "No Objects")


# ----------------------------------------------------------------------------- classify


def test_classification_metrics_from_a_hand_made_prediction_file(tmp_path):
    lines = [  # (label, completion)
        ({"label": "british_shorthair"}, answer("British Shorthair")),  # right: normalised match
        ({"label": "abyssinian", "synonyms": ["aby"]}, answer("aby")),  # right: a synonym
        ("abyssinian", answer("british shorthair")),  # wrong: another class of the split
        ("abyssinian", "<think>hmm</think> abyssinian"),  # wrong: no answer tag -> no answer
        ("persian", answer("a cat")),  # wrong: no class at all
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps({"solution": s, "completion": c}) + "\n" for s, c in lines))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    records = [Record(f"{i}.png", "classify", r["solution"]) for i, r in enumerate(rows)]
    ev = score_completions(records, [r["completion"] for r in rows])
    m = ev.metrics
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["format_rate"] == pytest.approx(4 / 5)  # only line 4 lacks <answer>
    assert m["per_class"] == {
        "abyssinian": {"n": 3, "accuracy": pytest.approx(1 / 3)},
        "british shorthair": {"n": 1, "accuracy": 1.0},
        "persian": {"n": 1, "accuracy": 0.0},
    }
    assert m["confusion"] == {
        "abyssinian": {"abyssinian": 1, "british shorthair": 1, NO_ANSWER: 1},
        "british shorthair": {"british shorthair": 1},
        "persian": {OTHER: 1},
    }
    assert [r["reward"]["accuracy"] for r in ev.rows] == [1.0, 1.0, 0.0, 0.0, 0.0]  # the reward's own verdicts


@pytest.mark.parametrize(
    "task, solution, completion, expected",
    [
        ("count", 3, answer("three"), 1.0),  # a number word counts
        ("count", 3, answer("4"), 0.0),
        ("choice", "B", answer("(B)"), 1.0),
        ("choice", "B", answer("C"), 0.0),
    ],
)
def test_count_and_choice_accuracy(task, solution, completion, expected):
    ev = score_completions([Record("x.png", task, solution)], [completion])
    assert ev.metrics["accuracy"] == expected


def test_grounding_miou_and_fraction_above_half():
    size = (200, 100)
    records = [Record(f"{i}.png", "ground", [0, 0, 100, 100], fields={"query": "q"}, image_size=size) for i in range(3)]
    completions = [
        answer("(0,0),(500,1000)"),  # exactly the target: IoU 1
        answer("(0,0),(250,1000)"),  # (0,0,50,100): half the target, IoU 0.5 -> not above 0.5
        "no box at all",  # IoU 0
    ]
    m = score_completions(records, completions).metrics
    assert m["mIoU"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["iou_above_0.5"] == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------- detect


@pytest.fixture(scope="module")
def coco_eval(shapes_root):
    records = load_records(DataConfig(source="synthetic", task="detect", path=str(shapes_root)), "eval").records
    return records, shapes_root / "detect" / "test.json"


def test_perfect_detections_give_map_100(coco_eval):
    records, _ = coco_eval
    completions = [detection_answer([(b, 0.9) for b in r.solution], r.image_size) for r in records]
    m = score_completions(records, completions).metrics
    assert m["mAP"] == pytest.approx(1.0)
    assert m["AP50"] == pytest.approx(1.0)
    assert set(m["per_category"]) == {"circle", "square", "triangle", "star"}
    assert all(c["AP"] == pytest.approx(1.0) for c in m["per_category"].values())


def imperfect(records):
    """Deterministic mistakes: shifted boxes, misses, false positives (also on negatives)."""
    out = []
    for k, r in enumerate(records):
        w, h = r.image_size
        boxes = []
        for j, (x1, y1, x2, y2) in enumerate(r.solution):
            if (k + j) % 5 == 0:
                continue  # a miss
            # shifted by n/23 of the width: IoU (23 - n) / (23 + n), never exactly on a COCO threshold
            shift = ((k * 7 + j * 3) % 9) * (x2 - x1) / 23
            boxes.append(([x1 + shift, y1, min(x2 + shift, w), y2], round(0.3 + ((k * 13 + j) % 7) / 10, 2)))
        if k % 3 == 0:  # a false positive somewhere else, low or high confidence
            boxes.append(([2.0, 2.0, 20.0 + k % 5, 22.0], 0.15 + (k % 4) / 5))
        out.append(boxes)
    return out


def test_imperfect_detections_match_pycocotools_on_the_coco_file(coco_eval):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    records, json_path = coco_eval
    dets = imperfect(records)
    m = score_completions(records, [detection_answer(d, r.image_size) for d, r in zip(dets, records)]).metrics

    # pycocotools straight on the annotation file, detections in its own image / category ids
    gt = COCO(str(json_path))
    results = [{"image_id": r.meta["image_id"], "category_id": r.meta["category_id"],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": c}
               for d, r in zip(dets, records) for (x1, y1, x2, y2), c in d]
    ev = COCOeval(gt, gt.loadRes(results), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert 0.1 < ev.stats[0] < 0.9  # genuinely imperfect
    assert m["mAP"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert m["AP50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert m["AP75"] == pytest.approx(ev.stats[2], abs=1e-12)


def test_map_averages_only_the_chosen_categories_and_handles_no_detections():
    size = (100, 100)
    recs = [
        Record("a.png", "detect", [[10, 10, 50, 50]], fields={"category": "bus"}, image_size=size),
        Record("a.png", "detect", [[60, 60, 90, 90]], fields={"category": "cat"}, image_size=size),
        Record("b.png", "detect", [], fields={"category": "dog"}, image_size=size),  # no ground truth anywhere
    ]
    completions = [detection_answer([([10, 10, 50, 50], 0.9)], size), answer("No Objects"),
                   detection_answer([([1, 1, 9, 9], 0.5)], size)]
    m = score_completions(recs, completions).metrics
    assert m["per_category"]["bus"]["AP"] == pytest.approx(1.0)
    assert m["per_category"]["cat"]["AP"] == 0.0  # missed entirely
    assert m["per_category"]["dog"]["AP"] is None  # no ground truth: left out of the mean
    assert m["mAP"] == pytest.approx(0.5)

    nothing = score_completions(recs, [answer("No Objects")] * 3).metrics  # pycocotools cannot load [] itself
    assert nothing["mAP"] == 0.0 and nothing["n_detections"] == 0


def test_two_stage_absent_counts_as_no_detections_and_not_in_the_format_rate():
    size = (100, 100)
    recs = [Record("a.png", "detect", [[10, 10, 50, 50]], fields={"category": "bus"}, image_size=size),
            Record("b.png", "detect", [], fields={"category": "bus"}, image_size=size)]
    ev = score_completions(recs, [detection_answer([([10, 10, 50, 50], 0.8)], size), None])
    assert ev.metrics["mAP"] == pytest.approx(1.0)
    assert ev.metrics["format_rate"] == 1.0  # the unasked record is not a format failure
    assert ev.rows[1]["reward"] is None and ev.rows[1]["parsed"] == []


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>a red bus</think><answer>Yes</answer>", True),
        ("<think>nothing</think><answer>no.</answer>", False),
        ("Yes, there is one.", True),  # no tags: the gate still reads it, never drops a category silently
        ("<answer>maybe</answer>", None),  # unreadable: the caller asks for boxes anyway
        ("", None),
    ],
)
def test_parse_yes_no(completion, expected):
    assert parse_yes_no(completion) is expected


# ----------------------------------------------------------------------------- plumbing


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("coco:a/val.json", ["data.source=coco", "data.path=a/val.json", "data.eval_path=a/val.json"]),
        ("jsonl:t.jsonl", ["data.source=jsonl", "data.path=t.jsonl", "data.eval_path=t.jsonl"]),
        ("x/val.json", ["data.source=coco", "data.path=x/val.json", "data.eval_path=x/val.json"]),  # kind from suffix
        ("synthetic", ["data.source=synthetic", "data.eval_path=null"]),
    ],
)
def test_data_spec(spec, expected):
    assert data_overrides(spec) == expected


def test_data_spec_without_a_kind_is_a_user_error():
    with pytest.raises(UserError, match="SOURCE:PATH"):
        data_overrides("somefile.txt")


def test_out_dir_refuses_non_empty_without_force(tmp_path):
    # an earlier eval's output: refused without --force, replaced with it
    out = tmp_path / "ev"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / "predictions.jsonl").write_text("")
    with pytest.raises(UserError, match="--force"):
        prepare_output_dir(out, kind="eval", force=False)
    prepare_output_dir(out, kind="eval", force=True)
    assert not (out / "metrics.json").exists()


def test_eval_on_the_tiny_model_writes_predictions_and_metrics(tiny_model_dir, shapes_root, tmp_path, capsys):
    overrides = [f"model.name={tiny_model_dir}", "model.quant=none", "model.device=cpu",
                 "model.min_pixels=3136", "model.max_pixels=12544", "eval.batch_size=3", "eval.max_new_tokens=6"]
    ev, out = run_eval(preset="demo", data=f"synthetic:{shapes_root}", task="classify", overrides=overrides,
                       limit=5, out=tmp_path / "ev")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(rows) == 5 and metrics["n"] == 5
    assert {"completion", "parsed", "reward"} <= set(rows[0])
    assert metrics["accuracy"] == pytest.approx(sum(r["reward"]["accuracy"] for r in rows) / 5)
    assert "accuracy" in capsys.readouterr().out
    with pytest.raises(UserError, match="not empty"):
        run_eval(preset="demo", data=f"synthetic:{shapes_root}", overrides=overrides, limit=2, out=out)


def test_two_stage_eval_runs_on_the_tiny_model(tiny_model_dir, shapes_root, tmp_path):
    overrides = [f"model.name={tiny_model_dir}", "model.quant=none", "model.device=cpu",
                 "model.min_pixels=3136", "model.max_pixels=12544", "eval.batch_size=4", "eval.max_new_tokens=4"]
    ev, out = run_eval(preset="demo", data=f"synthetic:{shapes_root}", task="detect", overrides=overrides,
                       limit=4, out=tmp_path / "ev", two_stage=True, quiet=True)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all("presence_completion" in r for r in rows)
    # a record whose presence answer was "no" was never asked for boxes
    assert all(r["completion"] is None for r in rows if r["present"] is False)
    assert ev.metrics["two_stage"] is True and "mAP" in ev.metrics
