"""Sampling a group of G completions for one prompt.

An explicit decode loop rather than `generate()`: every sampling parameter comes from the
run's config (the checkpoint's generation_config.json, near-greedy for Qwen2-VL, cannot
leak in), vision placeholder tokens are never sampled, and the prompt (image included) is
prefilled once and its KV cache shared by the G samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from visualrft_lite.config import RolloutConfig
from visualrft_lite.modeling import ops


@dataclass
class Group:
    """G sampled completions of one prompt."""

    completion_ids: torch.Tensor  # [G, T] right-padded with pad_id after the first EOS
    completion_mask: torch.Tensor  # [G, T] 1 up to and including the first EOS
    texts: list[str]  # decoded completions (special tokens dropped)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)  # [G]


def filter_logits(logits: torch.Tensor, *, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus filtering of [B, V] fp32 logits (masked entries become -inf)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [B, V]
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_tokens(
    logits: torch.Tensor,
    cfg: RolloutConfig,
    *,
    step: int,
    generated: torch.Tensor | None,
    eos_ids: list[int],
    suppress_ids: list[int],
    greedy: bool,
    generator: torch.Generator | None,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Pick one token per row from [B, V] logits -> [B]; ids >= vocab_size are never picked."""
    logits = logits.float()
    banned = suppress_ids + (eos_ids if step < cfg.min_completion_length else [])
    if banned:
        logits = logits.index_fill(1, torch.tensor(banned, device=logits.device), float("-inf"))  # a copy
    if vocab_size is not None and vocab_size < logits.shape[1]:
        # embedding rows past the tokenizer (padding to a round size) decode to nothing
        logits = logits.clone() if not banned else logits
        logits[:, vocab_size:] = float("-inf")
    if cfg.repetition_penalty != 1.0 and generated is not None and generated.numel():
        seen = torch.gather(logits, 1, generated)
        seen = torch.where(seen > 0, seen / cfg.repetition_penalty, seen * cfg.repetition_penalty)
        logits = logits.scatter(1, generated, seen)
    if greedy:
        return logits.argmax(-1)
    logits = filter_logits(logits / cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    probs = torch.softmax(logits, dim=-1)  # [B, V]
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample_group(
    model: Any,
    processor: Any,
    prompt: ops.PromptInputs,
    embeds: torch.Tensor,
    cfg: RolloutConfig,
    *,
    num: int | None = None,
    greedy: bool = False,
    max_new_tokens: int | None = None,
    generator: torch.Generator | None = None,
) -> Group:
    """Sample `num` (default G) completions of one prompt, prefilling it once."""
    num = num or cfg.num_generations
    max_new = max_new_tokens or cfg.max_completion_length
    eos_ids, suppress_ids, pad_id = ops.special_token_ids(processor)
    device = prompt.input_ids.device
    eos = torch.tensor(eos_ids, device=device)

    was_training = model.training
    model.eval()  # no dropout while sampling
    try:
        logits, cache = ops.prefill(model, prompt, embeds)  # [1, V]
        cache.batch_repeat_interleave(num)
        logits = logits.expand(num, -1)  # [G, V]
        tokens = torch.empty(num, 0, dtype=torch.long, device=device)  # [G, t]
        done = torch.zeros(num, dtype=torch.bool, device=device)  # [G]
        for step in range(max_new):
            nxt = next_tokens(logits, cfg, step=step, generated=tokens, eos_ids=eos_ids, suppress_ids=suppress_ids,
                              greedy=greedy, generator=generator, vocab_size=len(processor.tokenizer))  # [G]
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done = done | torch.isin(nxt, eos)
            if bool(done.all()) or step == max_new - 1:
                break
            positions = ops.text_positions(prompt.length + step, 1, prompt.rope_delta, num, device)  # [3, G, 1]
            logits = ops.decode(model, nxt[:, None], positions, cache)  # [G, V]
    finally:
        model.train(was_training)

    mask = completion_mask(tokens, eos)
    texts = processor.tokenizer.batch_decode(
        [row[: int(n)] for row, n in zip(tokens, mask.sum(1))], skip_special_tokens=True
    )
    return Group(completion_ids=tokens, completion_mask=mask, texts=texts)


def completion_mask(tokens: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """[G, T] -> 1 for tokens up to and including the first EOS (all, if no EOS)."""
    is_eos = torch.isin(tokens, eos)  # [G, T]
    # count of EOS strictly before each position; a token is kept while that count is 0
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (before == 0).long()
