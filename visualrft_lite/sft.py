"""One supervised step: token-mean cross-entropy of the answer text after each prompt.

The run's SFT warm-up (`train.sft_warmup`, Reason-RFT's first phase) and `vrft-lite sft` (the
paper's baseline) take these steps; the targets are `prompts.sft_target`'s
`<think>…</think> <answer>…</answer>`, in the model's box convention.
"""

from __future__ import annotations

from typing import Any

import torch

from visualrft_lite.data.records import Record
from visualrft_lite.data.skips import unreadable
from visualrft_lite.logprobs import completion_logprobs, fresh_features, micro_batches
from visualrft_lite.modeling import ops
from visualrft_lite.prompts import sft_target
from visualrft_lite.decoder import encode_inputs
from visualrft_lite.session import Trainer, peak_memory_gb


def sft_step(t: Trainer) -> dict[str, Any]:
    """One supervised step: token-mean cross-entropy of the answer text after each prompt."""
    cfg = t.cfg
    t0 = t.clock()
    records = t.records_for_step(cfg.train.sft_batch_size)
    enc = encode_inputs(t.model, t.processor, [r.image for r in records], [t.prompt_text(r) for r in records], t.device)
    if enc.failed:
        t.log.skipped([unreadable(records[i], reason, "sft-step") for i, reason in enc.failed.items()])
    loss_total, num_tok, finite = 0.0, 0, True
    if enc.batch is not None:
        ids, mask = sft_targets(t, [records[i] for i in enc.kept], enc)  # [P, T]
        num_tok = int(mask.sum())
        t.model.train()
        for rows in micro_batches(ids.shape[0], cfg.train.micro_batch_size):
            batch, features, index = enc.batch, enc.features, list(range(rows.start, rows.stop))
            if cfg.lora.train_vision:
                batch, features, index = fresh_features(t.model, batch, index)
            logp = completion_logprobs(t.model, batch, features, index, ids[rows], mask[rows], 1.0)  # [b, T]
            loss = -logp.sum() / num_tok  # summed over micro-batches: the token mean of the whole batch
            if not torch.isfinite(loss):
                finite = False
                break
            loss.backward()
            loss_total += loss.item()
    t1 = t.clock()
    applied, grad_norm = t.update(finite, cfg.train.sft_learning_rate)
    t.state = t.state.after_update(applied)
    m = {"step": t.step, "phase": "sft", "loss": loss_total if finite else float("nan"), "tokens": num_tok,
         "grad_norm": grad_norm, "lr": cfg.train.sft_learning_rate, "time/sft": round(t1 - t0, 4),
         "time/optimizer": round(t.clock() - t1, 4), "skipped_images": len(enc.failed),
         "skipped_update": not applied, "peak_memory_gb": peak_memory_gb(t.device)}
    return t.processes.mean_metrics(m)


def sft_targets(t: Trainer, records: list[Record], enc: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The supervised completions, ending with the end-of-turn token, right-padded -> ids, mask [P, T]."""
    tokens = ops.special_tokens(t.processor)
    rows = []
    for p, rec in enumerate(records):
        text = sft_target(rec, rec.image_size or enc.images[p].size, coords=t.cfg.model.coords,
                          resized_size=enc.batch.resized_sizes[p])
        rows.append(ops.completion_tokens(t.processor, text) + [tokens.eos[0]])  # minus the template's <think>
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokens.pad] * (T - len(r)) for r in rows], device=t.device)
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows], device=t.device)
    return ids, mask
