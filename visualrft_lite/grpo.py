"""The GRPO step as pure tensor functions: group advantages, token log-probs, the loss.

Torch only: no model, no transformers, no peft. The training loop calls them in this order:

    totals = aggregate_rewards(rewards, G, "sum")                # [B] from per-completion dicts
    keep = ~tied_groups(totals, G)                               # [P] dynamic sampling (DAPO)
    advantages = group_advantages(totals, G, scale)              # [B]
    mask, truncated = mask_truncated(ids, mask, eos_ids)         # overlong filtering (DAPO)
    logp = token_logprobs(hidden, lm_head.weight, targets, ...)  # [N] -> scattered to [B, T]
    loss, stats = grpo_loss(logp, mask, advantages, ...)         # per micro-batch
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from visualrft_lite.objectives import LOSS_TYPES, REWARD_AGGREGATIONS

RewardScale = Literal["group", "batch", "none"]
LossType = str  # a name in objectives.LOSS_TYPES
ImportanceSampling = Literal["token", "sequence"]
RewardAggregation = str  # a name in objectives.REWARD_AGGREGATIONS


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (GRPO compares a group), got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(
            f"{rewards.numel()} rewards do not split into groups of {group_size}; "
            "rewards must hold num_generations completions for every prompt"
        )
    return rewards.reshape(-1, group_size)  # [P, G]


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: RewardScale = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """Group-relative advantages A = (r − group mean) / (std + eps), shape [N] like `rewards`.

    `rewards` is group-contiguous: prompt 0's `group_size` completions, then prompt 1's, …
    `scale`: "group" divides by each group's std (the paper), "batch" by the std of all N
    rewards, "none" leaves r − mean. Stds are unbiased (divide by n − 1, torch's default and
    TRL's), so [1, 0, 0, 1] has std sqrt(1/3), not 0.5. A group whose rewards are all equal gets
    advantage 0 for every completion (0 / (0 + eps)).
    """
    grouped = _grouped(rewards.float(), group_size)  # [P, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # [P, G]
    if scale == "group":
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)  # [P, G]
    elif scale == "batch":
        centred = centred / (grouped.std() + eps)  # [P, G]
    elif scale != "none":
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return centred.reshape(-1)  # [N]


def tied_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Which groups have all-equal rewards, bool [P]: their advantages are 0, so they teach nothing.

    DAPO's dynamic sampling drops these groups and draws more prompts in their place. Equality
    is exact, as in `group_advantages`: rewards that differ by any amount still carry signal.

    >>> tied_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2).tolist()
    [True, False]
    """
    grouped = _grouped(rewards, group_size)  # [P, G]
    return (grouped == grouped[:, :1]).all(dim=1)  # [P]


def zero_signal_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose rewards are all equal (`tied_groups`)."""
    return tied_groups(rewards, group_size).float().mean().item()


def aggregate_rewards(
    rewards: Sequence[Mapping[str, float]],
    group_size: int,
    mode: RewardAggregation = "sum",
    *,
    weights: Mapping[str, float] | None = None,
    eps: float = 1e-4,
) -> torch.Tensor:
    """The per-completion rewards the advantages are computed from, fp32 [N].

    `rewards` holds one dict per completion, group-contiguous like `group_advantages`' input,
    each with its components and `total` (as `rewards.score` returns them). `mode` is a
    registered reward aggregation (`objectives.REWARD_AGGREGATIONS`):
        sum                 — `total` as scored: the weighted sum of the components (the paper).
        normalize_then_sum  — each component z-scored within its group, (c − mean) / (std + eps)
                              (unbiased std), then summed with `weights` (a missing name weighs
                              1.0): GDPO's decoupled normalisation, so a component whose values
                              spread widely cannot drown a rarer one. A component that is
                              constant within a group contributes exactly 0 there; one missing
                              from a dict counts as 0.
    """
    aggregate = REWARD_AGGREGATIONS.get(mode)
    _grouped(torch.empty(len(rewards)), group_size)  # the same checks as the advantages
    return torch.tensor(aggregate(rewards, group_size, weights, eps), dtype=torch.float32)  # [N]


def mask_truncated(
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    eos_ids: Sequence[int] | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DAPO's overlong filtering: (mask with truncated completions zeroed [G, T], truncated bool [G]).

    A completion is truncated when no EOS token lies inside its mask: sampling stopped at
    rollout.max_completion_length, so its ending (and its reward) says little about its tokens.
    Its rows get mask 0, so it adds no loss and no gradient; its reward still counts in its
    group's advantages. The mask keeps its dtype.
    """
    if completion_ids.shape != completion_mask.shape or completion_ids.ndim != 2:
        raise ValueError(f"completion_ids and completion_mask must both be [G, T]; got "
                         f"{tuple(completion_ids.shape)}, {tuple(completion_mask.shape)}")
    eos = torch.as_tensor(eos_ids, device=completion_ids.device).reshape(-1)  # [E]
    ended = (torch.isin(completion_ids, eos) & completion_mask.bool()).any(dim=1)  # [G]
    truncated = ~ended  # [G]
    return completion_mask.masked_fill(truncated.unsqueeze(1), 0), truncated  # [G, T], [G]


def _chunk_token_logprobs(
    hidden: torch.Tensor,  # [C, H]
    weight: torch.Tensor,  # [V, H]
    bias: torch.Tensor | None,  # [V]
    targets: torch.Tensor,  # [C]
    temperature: float,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    # The matmul runs in the inputs' dtype (bf16 on GPU accumulates in fp32); casting the
    # [V, H] weight to fp32 instead would allocate 4·V·H bytes per chunk (0.9 GB for Qwen2-VL-2B).
    logits = F.linear(hidden, weight, bias).float()  # [C, V]
    if temperature != 1.0:
        logits = logits / temperature  # [C, V]
    target_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [C]
    lse = torch.logsumexp(logits, dim=-1)  # [C]
    if not with_entropy:
        return target_logits - lse  # [C]
    with torch.no_grad():  # a metric: no gradient, nothing more saved for backward
        # H = −Σ p·log p = logsumexp(z) − Σ p·z with p = softmax(z); lm_head logits are finite
        entropy = lse.detach() - (torch.softmax(logits.detach(), dim=-1) * logits.detach()).sum(-1)  # [C]
    return target_logits - lse, entropy  # [C], [C]


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 256,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log p(target | hidden) for each row, fp32 [N], without ever holding the [N, V] logits.

    `hidden` [N, H] are final hidden states at the positions that predict `targets` [N] (for a
    completion: positions prompt_len−1 … end−1, flattened with the completion mask); `weight`
    [V, H] and `bias` [V] are the lm_head's. Rows are processed `chunk_size` at a time: logits =
    hidden @ weight.T + bias (in the inputs' dtype), upcast to fp32, divided by `temperature`,
    then logit[target] − logsumexp. Peak extra memory is one chunk's [chunk_size, V] logits.
    When a gradient is needed, each chunk runs under non-reentrant activation checkpointing, so
    backward recomputes that chunk's logits rather than keeping all N rows of them alive.

    `return_entropy=True` returns (logp [N], entropy [N]): also the entropy of each row's
    next-token distribution (after `temperature`, i.e. the sampling distribution), from the same
    chunk logits, so it costs no extra forward. The entropy is detached (a metric, not a loss
    term); mean it over completion tokens for the step's `entropy`.
    """
    if hidden.ndim != 2 or weight.ndim != 2 or targets.ndim != 1:
        raise ValueError(
            "token_logprobs wants hidden [N, H], weight [V, H], targets [N]; got "
            f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(targets.shape)}"
        )
    if hidden.shape[0] != targets.shape[0] or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"shape mismatch: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, "
            f"targets {tuple(targets.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    chunks, entropies = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        h = hidden[start : start + chunk_size]  # [C, H]
        t = targets[start : start + chunk_size]  # [C]
        if needs_grad:
            # preserve_rng_state=False: the chunk is deterministic (no dropout), skip the RNG stash.
            out = checkpoint(
                _chunk_token_logprobs, h, weight, bias, t, temperature, return_entropy,
                use_reentrant=False, preserve_rng_state=False,
            )  # [C] or ([C], [C])
        else:
            out = _chunk_token_logprobs(h, weight, bias, t, temperature, return_entropy)  # [C] or ([C], [C])
        if return_entropy:
            chunks.append(out[0])
            entropies.append(out[1])
        else:
            chunks.append(out)
    if not chunks:
        empty = hidden.new_zeros(0, dtype=torch.float32)  # [0]
        return (empty, empty.clone()) if return_entropy else empty
    if return_entropy:
        return torch.cat(chunks), torch.cat(entropies)  # [N], [N]
    return torch.cat(chunks)  # [N]


def grpo_loss(
    logp: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    *,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.04,
    loss_type: LossType = "grpo",
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    max_completion_length: int | None = None,
    num_sequences: int | None = None,
    num_tokens: int | None = None,
    importance_sampling: ImportanceSampling = "token",
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped GRPO objective with a k3 KL penalty; returns (scalar loss, detached stats).

    logp, mask, old_logp, ref_logp: [B, T] over completion tokens (mask 1 = a completion token,
    including the first EOS); advantages: [B]. Per token:
        ratio = exp(logp − old_logp)   (old_logp None: logp.detach(), i.e. one update per rollout,
                                        ratio 1 and gradient A·∇logp)
        obj   = −min(ratio·A, clip(ratio, 1 − epsilon_low, 1 + epsilon_high)·A)
              + beta·(exp(ref − logp) − (ref − logp) − 1)   (skipped if beta == 0 or ref None)
    `importance_sampling="sequence"` is GSPO (Zheng et al. 2025): every token of sequence i uses
    the one length-normalised ratio s_i = exp(mean over its tokens of (logp − old_logp)), the
    geometric mean of its token ratios, clipped as a whole (GSPO clips far tighter: pass its
    epsilons, 3e-4 / 4e-4). The KL term stays per token. With old_logp None, s_i = 1 and the
    gradient equals the token-level one.
    Aggregation (`loss_type`, a registered `objectives.LOSS_TYPES` entry):
        grpo    — mean over each sequence's tokens, then sum / num_sequences (the paper)
        dapo    — sum over all tokens / num_tokens
        dr_grpo — sum over all tokens / (num_sequences · max_completion_length)
    Micro-batching: pass the FULL rollout batch's `num_sequences` and `num_tokens` (default: this
    call's own) so that the micro-batch losses sum to the full-batch loss, gradients included.
    `max_completion_length` is required for dr_grpo: it is the sampling budget, not this batch's
    padded width (which varies between micro-batches). Positions outside `mask` are ignored, even
    if they hold inf/NaN; a sequence with no completion tokens contributes 0.

    Stats (over this call's masked tokens): loss, kl (mean k3, reported even when beta == 0;
    0 without a reference),
    clip_fraction (tokens whose clipped term is the active one; at sequence level, the tokens of
    clipped sequences), ratio_mean (token-weighted), completion_tokens.
    """
    if logp.ndim != 2 or mask.shape != logp.shape:
        raise ValueError(f"logp and mask must both be [B, T]; got {tuple(logp.shape)}, {tuple(mask.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [B]={logp.shape[0]}, got shape {tuple(advantages.shape)}")
    for name, other in (("old_logp", old_logp), ("ref_logp", ref_logp)):
        if other is not None and other.shape != logp.shape:
            raise ValueError(f"{name} must match logp's shape {tuple(logp.shape)}, got {tuple(other.shape)}")
    reduction = LOSS_TYPES.get(loss_type)
    if reduction.needs_max_length and max_completion_length is None:
        raise ValueError(f"loss_type {loss_type!r} needs max_completion_length (rollout.max_completion_length)")
    if not (0 <= epsilon_low < 1 and epsilon_high >= 0):
        raise ValueError(f"need 0 <= epsilon_low < 1 and epsilon_high >= 0, got {epsilon_low}, {epsilon_high}")
    if importance_sampling not in ("token", "sequence"):
        raise ValueError(f"importance_sampling must be 'token' or 'sequence', got {importance_sampling!r}")

    mask = mask.bool()  # [B, T]
    weights = mask.float()  # [B, T]
    # Zero out padding before any arithmetic, so garbage there cannot reach loss or gradient
    # (NaN·0 is NaN, and where() still back-propagates NaN through the unselected branch).
    logp = logp.float().masked_fill(~mask, 0.0)  # [B, T]
    old = logp.detach() if old_logp is None else old_logp.float().masked_fill(~mask, 0.0)  # [B, T]
    adv = advantages.float().unsqueeze(1)  # [B, 1]
    tokens_per_seq = weights.sum(dim=1)  # [B]

    log_ratio = logp - old  # [B, T], 0 at padding
    if importance_sampling == "sequence":
        seq_log_ratio = log_ratio.sum(dim=1, keepdim=True) / tokens_per_seq.clamp(min=1.0).unsqueeze(1)  # [B, 1]
        ratio = torch.exp(seq_log_ratio).expand_as(logp)  # [B, T], one value per row
    else:
        ratio = torch.exp(log_ratio)  # [B, T]
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)  # [B, T]
    per_token = -torch.minimum(ratio * adv, clipped_ratio * adv)  # [B, T]

    k3 = None
    if ref_logp is not None:
        ref_minus_logp = ref_logp.float().masked_fill(~mask, 0.0) - logp  # [B, T]
        k3 = torch.exp(ref_minus_logp) - ref_minus_logp - 1.0  # [B, T]
        if beta != 0.0:
            per_token = per_token + beta * k3  # [B, T]
    per_token = per_token * weights  # [B, T]

    n_seq = max(logp.shape[0] if num_sequences is None else num_sequences, 1)
    n_tok = tokens_per_seq.sum().clamp(min=1.0) if num_tokens is None else max(num_tokens, 1)
    loss = reduction.reduce(per_token, tokens_per_seq, n_seq, n_tok, max_completion_length)  # []

    with torch.no_grad():
        n_here = weights.sum().clamp(min=1.0)  # []
        high_clipped = (ratio > 1.0 + epsilon_high) & (adv > 0)  # [B, T]
        low_clipped = (ratio < 1.0 - epsilon_low) & (adv < 0)  # [B, T]
        is_clipped = high_clipped | low_clipped  # [B, T]
        stats = {
            "loss": loss.item(),
            "kl": ((k3 * weights).sum() / n_here).item() if k3 is not None else 0.0,
            "clip_fraction": ((is_clipped.float() * weights).sum() / n_here).item(),
            "ratio_mean": ((ratio * weights).sum() / n_here).item(),
            "completion_tokens": weights.sum().item(),
        }
    return loss, stats
