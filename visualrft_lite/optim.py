"""The optimizer of the adapters and its learning-rate schedule.

`OPTIMIZERS` holds every optimizer a config can name (train.optimizer), registered once here.
`Updater.apply` is the whole update: average the gradients over processes, clip, set the
learning rate, step, zero. `Updater.discard` drops a step's gradients instead. torch is
imported when an optimizer is built, so config validation can read the registry cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from visualrft_lite.errors import UserError
from visualrft_lite.registry import Registry

if TYPE_CHECKING:
    import torch

    from visualrft_lite.config import TrainConfig
    from visualrft_lite.distributed import Processes


@dataclass(frozen=True)
class Optimizer:
    """build(params, lr=..., weight_decay=...) -> a torch optimizer."""

    build: Callable[..., Any]
    needs_cuda: bool = False


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer", "train.optimizer")


def _adamw(params: list[Any], *, lr: float, weight_decay: float) -> Any:
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _paged_adamw_8bit(params: list[Any], *, lr: float, weight_decay: float) -> Any:
    from visualrft_lite.modeling.optimizers import paged_adamw_8bit

    return paged_adamw_8bit(params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS.add("adamw", Optimizer(_adamw), help="torch's AdamW, fp32 states")
OPTIMIZERS.add("paged_adamw_8bit", Optimizer(_paged_adamw_8bit, needs_cuda=True),
               help="bitsandbytes' AdamW with 8-bit states in paged memory (CUDA only)")


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    choice = OPTIMIZERS.get(cfg.optimizer)
    if choice.needs_cuda and device.type != "cuda":
        raise UserError(f"train.optimizer={cfg.optimizer} needs CUDA; use --set train.optimizer=adamw")
    return choice.build(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for the update at `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class Updater:
    """Parameters, their optimizer and the count of updates applied (for the schedule)."""

    def __init__(self, params: list[torch.nn.Parameter], cfg: TrainConfig, processes: Processes) -> None:
        self.params, self.cfg, self.processes = params, cfg, processes
        self.optimizer = make_optimizer(params, cfg, processes.device)
        self.updates = 0

    def grpo_lr(self, total_updates: int) -> float:
        c = self.cfg
        return c.learning_rate * lr_factor(self.updates, warmup=c.warmup_steps, total=total_updates,
                                           schedule=c.lr_schedule)

    def apply(self, lr: float) -> float:
        """Average over processes, clip, step at `lr`; returns the gradient norm before clipping."""
        import torch

        self.processes.average_gradients(self.params)
        max_norm = self.cfg.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm if max_norm > 0 else float("inf"))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        return float(norm)

    def discard(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
