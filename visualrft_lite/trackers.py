"""Experiment trackers (`train.report_to`): the metrics.jsonl numbers and the alerts, elsewhere too.

metrics.jsonl stays the record of a run; a tracker mirrors it. Each one logs exactly the
numeric fields of a metrics line (bools and strings are left out, `step` is the x-axis) and
every alert as text. Only the main process should make one.

    tracker = make_tracker(cfg.train.report_to, run_dir, config=cfg.to_dict(), project=cfg.train.wandb_project)
    tracker.log(metrics, step=metrics["step"])
    tracker.alert(alert)
    tracker.close()

tensorboard writes event files under run_dir/tensorboard/ (`tensorboard --logdir runs/`);
wandb logs to Weights & Biases, or to run_dir/wandb/ with WANDB_MODE=offline (`wandb sync`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from visualrft_lite.errors import UserError
from visualrft_lite.registry import Registry

if TYPE_CHECKING:
    from visualrft_lite.alerts import Alert


def numeric_fields(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics line, `step` excepted: ints and floats (NaN kept), never bools.

    >>> numeric_fields({"step": 3, "phase": "grpo", "reward": 1.5, "skipped_images": 0, "skipped_update": False})
    {'reward': 1.5, 'skipped_images': 0.0}
    """
    return {k: float(v) for k, v in metrics.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def alert(self, alert: Alert) -> None: ...
    def close(self) -> None: ...


TrackerFactory = Callable[..., "Tracker"]
"""(run_dir, *, config, project) -> Tracker."""
TRACKERS: Registry[TrackerFactory] = Registry("tracker", "train.report_to")


class NullTracker:
    """report_to: none."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def alert(self, alert: Alert) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    """Scalars under their metrics.jsonl names (reward, reward/iou, time/rollout, ...); alerts as
    text under alerts/<rule>."""

    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("train.report_to=tensorboard needs the tensorboard package: "
                            "pip install 'vrft-lite[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=30)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for key, value in numeric_fields(metrics).items():
            self.writer.add_scalar(key, value, global_step=step)

    def alert(self, alert: Alert) -> None:
        self.writer.add_text(f"alerts/{alert.rule}", alert.message, global_step=alert.step)
        self.writer.flush()  # an alert is worth seeing now, not at the next periodic flush

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One W&B run per run directory; alerts are logged as alert/<rule> = 1 at their step and
    raised as W&B alerts where the mode allows it (online)."""

    def __init__(self, run_dir: Path, project: str, config: dict[str, Any] | None):
        try:
            import wandb
        except ImportError:
            raise UserError("train.report_to=wandb needs the wandb package: pip install 'vrft-lite[wandb]' "
                            "(WANDB_MODE=offline logs without an account)") from None
        self.wandb = wandb
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=run_dir.name, dir=str(run_dir), config=config or {})

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(numeric_fields(metrics), step=step)

    def alert(self, alert: Alert) -> None:
        self.run.log({f"alert/{alert.rule}": 1.0}, step=alert.step)
        if self.run.settings.mode == "online":
            self.run.alert(title=f"vrft-lite: {alert.rule}", text=alert.message, level=self.wandb.AlertLevel.WARN)

    def close(self) -> None:
        self.run.finish()


TRACKERS.add("none", lambda run_dir, **_: NullTracker(), help="metrics.jsonl only")
TRACKERS.add("tensorboard", lambda run_dir, **_: TensorBoardTracker(run_dir / "tensorboard"),
             help="TensorBoard event files in RUN/tensorboard/ (pip install 'vrft-lite[tensorboard]')")
TRACKERS.add("wandb", lambda run_dir, *, config=None, project="vrft-lite": WandbTracker(run_dir, project, config),
             help="Weights & Biases (pip install 'vrft-lite[wandb]'; WANDB_MODE=offline needs no account)")


def make_tracker(report_to: str, run_dir: Path, *, config: dict[str, Any] | None = None,
                 project: str = "vrft-lite") -> Tracker:
    """The tracker `train.report_to` names; a missing package is a UserError naming its pip extra."""
    return TRACKERS.get(report_to)(Path(run_dir), config=config, project=project)
