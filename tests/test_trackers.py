"""Trackers: exactly the numeric metrics and the alerts reach TensorBoard / W&B; a missing package is one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from visualrft_lite.alerts import Alert
from visualrft_lite.config import load_config
from visualrft_lite.errors import UserError
from visualrft_lite.trackers import NullTracker, make_tracker, numeric_fields

# a metrics.jsonl line: numbers, a bool, a string (phase) and the step
LINE = {"step": 7, "phase": "grpo", "reward": 1.25, "reward/iou": 0.5, "kl": 0.01, "time/rollout": 2.5,
        "skipped_images": 0, "skipped_update": False, "top_answer": "daisy"}
NUMERIC = {"reward": 1.25, "reward/iou": 0.5, "kl": 0.01, "time/rollout": 2.5, "skipped_images": 0.0}


def test_numeric_fields_are_exactly_the_numbers():
    assert numeric_fields(LINE) == NUMERIC


def test_none_is_a_null_tracker(tmp_path: Path):
    tracker = make_tracker("none", tmp_path)
    assert isinstance(tracker, NullTracker)
    tracker.log(LINE, step=7)
    tracker.alert(Alert(7, "kl_jump", "KL jumped"))
    tracker.close()
    assert list(tmp_path.iterdir()) == []  # writes nothing


def test_tensorboard_writes_event_files_with_the_metrics_and_alerts(tmp_path: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = make_tracker("tensorboard", tmp_path)
    tracker.log(LINE, step=7)
    tracker.log({**LINE, "step": 8, "reward": 1.5}, step=8)
    tracker.alert(Alert(8, "kl_jump", "KL jumped to 0.5"))
    tracker.close()

    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert files and all(f.stat().st_size > 0 for f in files)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(NUMERIC)  # no bool, no string, no step
    assert [(e.step, e.value) for e in events.Scalars("reward")] == [(7, 1.25), (8, 1.5)]
    texts = [t for t in events.Tags()["tensors"] if t.startswith("alerts/")]
    assert texts == ["alerts/kl_jump/text_summary"]
    (alert,) = events.Tensors("alerts/kl_jump/text_summary")
    assert alert.step == 8 and b"KL jumped to 0.5" in alert.tensor_proto.string_val[0]


def test_wandb_offline_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = make_tracker("wandb", tmp_path / "run", config={"grpo": {"beta": 0.04}}, project="test")
    tracker.log(LINE, step=7)
    tracker.alert(Alert(7, "kl_jump", "KL jumped"))
    tracker.close()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("report_to, modules, extra", [
    ("tensorboard", ("tensorboard", "torch.utils.tensorboard"), "vrft-lite[tensorboard]"),
    ("wandb", ("wandb",), "vrft-lite[wandb]"),
])
def test_missing_package_is_a_one_line_user_error(tmp_path, monkeypatch, report_to, modules, extra):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    with pytest.raises(UserError) as e:
        make_tracker(report_to, tmp_path)
    assert extra in str(e.value) and "\n" not in str(e.value)


def test_report_to_is_a_validated_config_field():
    assert load_config(None).train.report_to == "none"
    assert load_config(None, ["train.report_to=tensorboard"]).train.report_to == "tensorboard"
    with pytest.raises(UserError, match="train.report_to"):
        load_config(None, ["train.report_to=mlflow"])
