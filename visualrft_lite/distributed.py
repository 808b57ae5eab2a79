"""This process's place in a data-parallel run and the few collectives the loop needs.

`accelerate launch --num_processes N vrft-lite train ...` runs N copies of the loop, each with
its own share of the prompts and its own copy of the (4-bit) base. They meet in exactly
four places, all here: whether an update is applied (`all_agree`: every process applies it
or every process skips it, so none waits alone in a collective), the gradient average before
the update, the metrics average for the log, and the RNG states gathered into a checkpoint.
A single process skips every collective.
"""

from __future__ import annotations

from typing import Any

import torch


class Processes:
    """Wraps accelerate's Accelerator: rank, world size, device, collectives."""

    def __init__(self, device: str) -> None:
        from accelerate import Accelerator

        cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        self.accelerator = Accelerator(cpu=cpu)
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.main = self.accelerator.is_main_process
        self.device = self.accelerator.device

    def all_agree(self, ok: bool) -> bool:
        """True on every process when `ok` holds on every process."""
        if self.world == 1:
            return ok
        from accelerate.utils import reduce

        failed = reduce(torch.tensor([0.0 if ok else 1.0], device=self.device), reduction="sum")
        return float(failed) == 0.0

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Every parameter's gradient replaced by its mean over processes (missing = 0)."""
        if self.world == 1:
            return
        from accelerate.utils import reduce

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset: offset + n].view_as(p).clone()
            offset += n

    def mean_metrics(self, m: dict[str, Any]) -> dict[str, Any]:
        """Numeric metrics averaged over processes (the main process logs them)."""
        if self.world == 1:
            return m
        from accelerate.utils import reduce

        keys = [k for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"]
        vec = reduce(torch.tensor([float(m[k]) for k in keys], dtype=torch.float64, device=self.device),
                     reduction="mean")
        return {**m, **dict(zip(keys, vec.tolist()))}

    def gather(self, obj: Any) -> list[Any]:
        """One object from each process, in rank order (the object itself when alone)."""
        if self.world == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()
