"""The choices of the GRPO objective a config names: how the loss is averaged (`LOSS_TYPES`,
grpo.loss_type) and how reward components become one number per completion
(`REWARD_AGGREGATIONS`, grpo.reward_aggregation).

Each entry is registered once, here, and read by config validation, `vrft-lite list` and
`grpo.py`. A loss type reduces the masked per-token objective [B, T] with tensor arithmetic
only, so this module needs no torch import; an aggregation is plain Python over the step's
reward dicts. Pure: stdlib only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from visualrft_lite.registry import Registry


@dataclass(frozen=True)
class LossType:
    """reduce(per_token [B, T] already masked, tokens_per_seq [B], n_seq, n_tok, max_len) -> scalar."""

    reduce: Callable[..., Any]
    needs_max_length: bool = False
    """The reduction divides by rollout.max_completion_length (the sampling budget)."""


LOSS_TYPES: Registry[LossType] = Registry("loss type", "grpo.loss_type")

LOSS_TYPES.add("grpo", LossType(lambda per_token, tokens, n_seq, n_tok, max_len:
                                (per_token.sum(dim=1) / tokens.clamp(min=1.0)).sum() / n_seq),
               help="mean over each sequence's tokens, then sum / num_sequences (the paper)")
LOSS_TYPES.add("dapo", LossType(lambda per_token, tokens, n_seq, n_tok, max_len: per_token.sum() / n_tok),
               help="sum over all tokens / num_tokens (DAPO's token-level mean)")
LOSS_TYPES.add("dr_grpo", LossType(lambda per_token, tokens, n_seq, n_tok, max_len:
                                   per_token.sum() / (n_seq * max_len), needs_max_length=True),
               help="sum over all tokens / (num_sequences * max_completion_length) (Dr. GRPO)")

Aggregation = Callable[[Sequence[Mapping[str, float]], int, Mapping[str, float] | None, float], list[float]]
"""(rewards, group_size, weights, eps) -> one number per completion."""
REWARD_AGGREGATIONS: Registry[Aggregation] = Registry("reward aggregation", "grpo.reward_aggregation")


@REWARD_AGGREGATIONS.register("sum", help="the weighted sum of the components, `total` as scored (the paper)")
def weighted_sum(rewards: Sequence[Mapping[str, float]], group_size: int, weights: Mapping[str, float] | None,
                 eps: float) -> list[float]:
    return [float(r["total"]) for r in rewards]


@REWARD_AGGREGATIONS.register("normalize_then_sum",
                              help="each component z-scored within its group, then weighted and summed (GDPO)")
def normalize_then_sum(rewards: Sequence[Mapping[str, float]], group_size: int, weights: Mapping[str, float] | None,
                       eps: float) -> list[float]:
    """(c − group mean) / (unbiased group std + eps) per component, summed with `weights` (a missing
    name weighs 1.0); a component constant within a group adds exactly 0 there, one missing from
    a dict counts as 0."""
    names = sorted({k for r in rewards for k in r if k != "total"})
    out = [0.0] * len(rewards)
    for name in names:
        weight = 1.0 if weights is None else float(weights.get(name, 1.0))
        values = [float(r.get(name, 0.0)) for r in rewards]
        for start in range(0, len(values), group_size):
            group = values[start:start + group_size]
            if all(v == group[0] for v in group):
                continue
            mean = sum(group) / len(group)
            std = math.sqrt(sum((v - mean) ** 2 for v in group) / (len(group) - 1))
            for k, v in enumerate(group):
                out[start + k] += weight * (v - mean) / (std + eps)
    return out
