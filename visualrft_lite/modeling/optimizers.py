"""Optimizers from bitsandbytes (CUDA only)."""

from __future__ import annotations

import torch


def paged_adamw_8bit(params: list[torch.nn.Parameter], *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with 8-bit states in paged memory: spikes spill to the host instead of failing."""
    import bitsandbytes as bnb

    return bnb.optim.PagedAdamW8bit(params, lr=lr, weight_decay=weight_decay)
