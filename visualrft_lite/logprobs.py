"""Log-probabilities of completions under the policy or (adapters off) the reference.

Only completion positions go through lm_head, chunk by chunk (`grpo.token_logprobs`): never
a full-vocabulary log-softmax over whole sequences. Rows of a micro-batch may answer
different prompts; each row's image features come from the step's single vision pass.
"""

from __future__ import annotations

from typing import Any

import torch

from visualrft_lite import grpo
from visualrft_lite.modeling import ops
from visualrft_lite.decoder import Completions


def completion_logprobs(model: Any, batch: ops.PromptBatch, features: ops.VisionFeatures,
                        prompt_index: list[int], ids: torch.Tensor, mask: torch.Tensor,
                        temperature: float, chunk: int = 256) -> torch.Tensor:
    """Per-token log-probs of completions ids [b, T] -> [b, T'] (0 where masked).

    T' is trimmed to the longest unmasked completion of the rows.
    """
    return _completion_logprobs(model, batch, features, prompt_index, ids, mask, temperature, chunk, False)[0]


def completion_logprobs_and_entropy(model: Any, batch: ops.PromptBatch, features: ops.VisionFeatures,
                                    prompt_index: list[int], ids: torch.Tensor, mask: torch.Tensor,
                                    temperature: float, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs [b, T'], detached entropy at each completion token [n]): the entropy comes
    from the same chunk logits as the log-probs, so it costs no extra forward."""
    return _completion_logprobs(model, batch, features, prompt_index, ids, mask, temperature, chunk, True)


def _completion_logprobs(model: Any, batch: ops.PromptBatch, features: ops.VisionFeatures, prompt_index: list[int],
                         ids: torch.Tensor, mask: torch.Tensor, temperature: float, chunk: int,
                         with_entropy: bool) -> tuple[torch.Tensor, Any]:
    mask = mask.bool()
    T = int(mask.sum(1).max())
    ids, mask = ids[:, :T], mask[:, :T]
    hidden = ops.completion_hidden(model, batch, features, prompt_index, ids)  # [b, T, H]
    weight, bias = ops.lm_head(model)
    result = grpo.token_logprobs(hidden[mask], weight, ids[mask], bias=bias, temperature=temperature,
                                 chunk_size=chunk, return_entropy=with_entropy)  # [n] or ([n], [n])
    flat, entropy = result if with_entropy else (result, None)
    out = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)  # [b, T']
    return out.masked_scatter(mask, flat), entropy


def micro_batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def pad_to(x: torch.Tensor, T: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, T - x.shape[1])) if x.shape[1] < T else x[:, :T]


@torch.no_grad()
def all_logprobs(model: Any, batch: ops.PromptBatch, features: ops.VisionFeatures, completions: Completions,
                 micro_batch: int, temperature: float) -> torch.Tensor:
    """Log-probs of every completion [N, T] under the model as it is now (no graph)."""
    T = completions.ids.shape[1]
    parts = []
    for rows in micro_batches(completions.size, micro_batch):
        logp = completion_logprobs(model, batch, features, list(completions.prompt_index[rows]),
                                   completions.ids[rows], completions.mask[rows], temperature)
        parts.append(pad_to(logp, T))
    return torch.cat(parts)  # [N, T]


def fresh_features(model: Any, batch: ops.PromptBatch, index: list[int]) -> tuple[ops.PromptBatch, ops.VisionFeatures, list[int]]:
    """For a trainable vision tower: the micro-batch's own prompts with features in its graph."""
    unique = sorted(set(index))
    sub = batch.select(unique)
    return sub, ops.image_features(model, sub), [unique.index(i) for i in index]
