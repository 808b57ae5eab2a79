"""The decoder: completions for a batch of prompts, sampled (rollouts) or greedy (eval, predict).

An explicit decode loop rather than `generate()`: every decoding parameter is a field of
`Decoding` (the checkpoint's generation_config.json, near-greedy for Qwen2-VL, cannot leak
in), vision placeholder tokens and ids past the tokenizer are never picked, and each prompt
(image included) is prefilled once, its KV cache repeated for its n completions.

All prompts of a call decode together as one batch of P×n rows (left-padded prompts, one
M-RoPE position per row, an attention mask that grows by one column a step), at most
`max_rows` rows at a time: prompts are split into chunks of max_rows // n.

Seed policy: one torch.Generator, rows drawn in batch order at each step. A row's
distribution (its logits given its prefix) is the same whichever prompts share its batch;
the tokens a given seed produces depend on the batch. Greedy decoding is the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from visualrft_lite.config import RolloutConfig
from visualrft_lite.modeling import ops


@dataclass(frozen=True)
class Decoding:
    """Every decoding parameter, explicit."""

    max_new_tokens: int
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0

    @classmethod
    def sampling(cls, cfg: RolloutConfig, max_new_tokens: int | None = None) -> Decoding:
        """The rollout's sampler, as configured."""
        return cls(max_new_tokens=max_new_tokens or cfg.max_completion_length, temperature=cfg.temperature,
                   top_k=cfg.top_k, top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty,
                   min_new_tokens=cfg.min_completion_length)

    @classmethod
    def greedy_search(cls, max_new_tokens: int) -> Decoding:
        """Greedy: the sampler with sampling off (argmax, no penalty, no minimum length)."""
        return cls(max_new_tokens=max_new_tokens, greedy=True)


@dataclass(frozen=True)
class Completions:
    """n completions of each of P prompts, row r answering prompt `prompt_index[r]`."""

    ids: torch.Tensor  # [N, T] right-padded with the pad id after the first EOS
    mask: torch.Tensor  # [N, T] 1 up to and including the first EOS
    texts: tuple[str, ...]  # decoded completions (special tokens dropped)
    prompt_index: tuple[int, ...]  # [N] the prompt each row answers

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)  # [N]

    @property
    def size(self) -> int:
        return self.ids.shape[0]

    def for_prompts(self, prompts: Sequence[int]) -> Completions:
        """The rows of `prompts` (in that order), renumbered 0, 1, ..."""
        rows = [r for p in prompts for r, q in enumerate(self.prompt_index) if q == p]
        index = {p: k for k, p in enumerate(prompts)}
        return Completions(self.ids[rows], self.mask[rows], tuple(self.texts[r] for r in rows),
                           tuple(index[self.prompt_index[r]] for r in rows))


def concat_completions(parts: Sequence[Completions], prompts_per_part: Sequence[int], pad: int) -> Completions:
    """Completions of consecutive prompt sets as one; prompt numbers continue across parts."""
    T = max(c.ids.shape[1] for c in parts)
    offsets = [sum(prompts_per_part[:k]) for k in range(len(parts))]
    return Completions(
        ids=torch.cat([torch.nn.functional.pad(c.ids, (0, T - c.ids.shape[1]), value=pad) for c in parts]),
        mask=torch.cat([torch.nn.functional.pad(c.mask, (0, T - c.mask.shape[1])) for c in parts]),
        texts=tuple(t for c in parts for t in c.texts),
        prompt_index=tuple(p + off for c, off in zip(parts, offsets) for p in c.prompt_index),
    )


def filter_logits(logits: torch.Tensor, *, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus filtering of [B, V] fp32 logits (masked entries become -inf)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [B, V]
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def logit_bias(tokens: ops.SpecialTokens, vocab_rows: int, device: torch.device,
               *, ban_eos: bool = False) -> torch.Tensor:
    """Additive [V] bias, built once per decode: -inf on ids never to pick (vision placeholders,
    turn starts, embedding rows past the tokenizer; with `ban_eos` the end ids too), 0 elsewhere."""
    bias = torch.zeros(vocab_rows, device=device)
    banned = list(tokens.never_sampled) + (list(tokens.eos) if ban_eos else [])
    bias[torch.tensor(banned, dtype=torch.long)] = float("-inf")
    bias[tokens.vocab_size:] = float("-inf")
    return bias


def next_tokens(logits: torch.Tensor, decoding: Decoding, *, bias: torch.Tensor, generated: torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
    """Pick one token per row from [B, V] logits plus the [V] `bias` -> [B]."""
    logits = logits.float() + bias  # [B, V]
    if decoding.repetition_penalty != 1.0 and generated.numel():
        seen = torch.gather(logits, 1, generated)
        seen = torch.where(seen > 0, seen / decoding.repetition_penalty, seen * decoding.repetition_penalty)
        logits = logits.scatter(1, generated, seen)
    if decoding.greedy:
        return logits.argmax(-1)
    logits = filter_logits(logits / decoding.temperature, top_k=decoding.top_k, top_p=decoding.top_p)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)


def completion_mask(tokens: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """[N, T] -> 1 for tokens up to and including the first EOS (all, if no EOS)."""
    is_eos = torch.isin(tokens, eos)  # [N, T]
    # count of EOS strictly before each position; a token is kept while that count is 0
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (before == 0).long()


@torch.no_grad()
def decode(model: Any, processor: Any, batch: ops.PromptBatch, features: ops.VisionFeatures, decoding: Decoding,
           *, per_prompt: int = 1, generator: torch.Generator | None = None,
           max_rows: int | None = None) -> Completions:
    """`per_prompt` completions of every prompt of `batch`, at most `max_rows` rows at a time."""
    tokens = ops.special_tokens(processor)
    prompts_per_chunk = max(1, (max_rows or batch.size * per_prompt) // per_prompt)
    parts = []
    with ops.eval_mode(model):
        for start in range(0, batch.size, prompts_per_chunk):
            index = list(range(start, min(start + prompts_per_chunk, batch.size)))
            sub = batch if len(index) == batch.size else batch.select(index)
            parts.append(_decode_chunk(model, sub, features.select(index), decoding, per_prompt, generator, tokens))
    T = max(ids.shape[1] for ids in parts)
    ids = torch.cat([torch.nn.functional.pad(p, (0, T - p.shape[1]), value=tokens.pad) for p in parts])  # [N, T]
    mask = completion_mask(ids, torch.tensor(tokens.eos, device=ids.device))
    texts = ops.detokenize(processor, [row[: int(n)] for row, n in zip(ids, mask.sum(1))])
    index = tuple(p for p in range(batch.size) for _ in range(per_prompt))
    return Completions(ids=ids, mask=mask, texts=tuple(texts), prompt_index=index)


def _decode_chunk(model: Any, batch: ops.PromptBatch, features: ops.VisionFeatures, decoding: Decoding,
                  per_prompt: int, generator: torch.Generator | None, tokens: ops.SpecialTokens) -> torch.Tensor:
    """Token ids [P*n, t] for one chunk of prompts (t <= max_new_tokens)."""
    logits, cache = ops.prefill(model, batch, features)  # [P, V]
    ops.repeat_cache(cache, per_prompt)
    logits = logits.repeat_interleave(per_prompt, dim=0)  # [N, V]
    rows = logits.shape[0]
    device = logits.device
    mask = batch.attention_mask.repeat_interleave(per_prompt, dim=0)  # [N, L], grows a column a step
    start = batch.next_position.repeat_interleave(per_prompt)  # [N]
    padded = not bool(mask.all())
    eos = torch.tensor(tokens.eos, device=device)
    bias = logit_bias(tokens, logits.shape[1], device)  # [V]
    bias_no_eos = logit_bias(tokens, logits.shape[1], device, ban_eos=True)  # [V] before min_new_tokens
    out = torch.empty(rows, 0, dtype=torch.long, device=device)  # [N, t]
    done = torch.zeros(rows, dtype=torch.bool, device=device)  # [N]
    for step in range(decoding.max_new_tokens):
        nxt = next_tokens(logits, decoding, bias=bias_no_eos if step < decoding.min_new_tokens else bias,
                          generated=out, generator=generator)  # [N]
        nxt = torch.where(done, torch.full_like(nxt, tokens.pad), nxt)
        out = torch.cat([out, nxt[:, None]], dim=1)
        done = done | torch.isin(nxt, eos)
        if step == decoding.max_new_tokens - 1 or bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # [N, L + step + 1]
        positions = ops.text_positions(start + step, 1)  # [3, N, 1]
        logits = ops.decode_step(model, nxt[:, None], positions, mask if padded else None, cache)  # [N, V]
    return out


@dataclass(frozen=True)
class Encoded:
    """The prompts that could be encoded, their image features, and why the others could not."""

    batch: ops.PromptBatch | None  # None when nothing could be encoded
    features: ops.VisionFeatures | None
    kept: tuple[int, ...]  # input positions behind the batch's rows
    images: tuple[Any, ...]  # the decoded images of the kept inputs (PIL)
    failed: dict[int, str]  # input position -> one-line reason


def encode_inputs(model: Any, processor: Any, images: Sequence[Any], prompts: Sequence[str],
                  device: torch.device) -> Encoded:
    """Load each image (path, bytes or PIL), apply the chat template, encode, compute features once.

    An image that cannot be read, or that the processor refuses (e.g. an extreme aspect
    ratio), is reported in `failed` and the others go on.
    """
    from visualrft_lite.data.images import ImageLoadError, load_image

    encoded, kept, decoded, failed = [], [], [], {}
    for i, (src, prompt) in enumerate(zip(images, prompts)):
        try:
            image = load_image(src)
            encoded.append(ops.encode_prompt(processor, image, prompt))
        except ImageLoadError as e:
            failed[i] = str(e)
            continue
        except ValueError as e:  # the processor's resize refuses the image
            failed[i] = f"image refused by the processor: {str(e).splitlines()[0]}"
            continue
        kept.append(i)
        decoded.append(image)
    if not encoded:
        return Encoded(None, None, (), (), failed)
    batch = ops.pad_prompts(model, encoded, ops.special_tokens(processor).pad, device)
    with torch.no_grad():
        features = ops.image_features(model, batch)
    return Encoded(batch, features, tuple(kept), tuple(decoded), failed)
