"""What a step reports: its metrics.jsonl line, its samples.jsonl rows, the held-out table.

Pure functions of the step's typed hand-offs (the `Rollout`, the loss statistics, the timers),
so they are tested without a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from visualrft_lite import grpo
from visualrft_lite.tasks import get_task

if TYPE_CHECKING:
    from visualrft_lite.config import Config
    from visualrft_lite.rollout import Rollout, SamplingStats
    from visualrft_lite.train import LossStats


def grpo_metrics(cfg: Config, step: int, ro: Rollout | None, loss: LossStats, *, grad_norm: float, lr: float,
                 times: dict[str, float], skipped_images: int, skipped_update: bool, sampling: SamplingStats,
                 peak_memory_gb: float) -> dict[str, Any]:
    """One GRPO step's metrics.jsonl line (before the average over processes)."""
    task, G = get_task(cfg.data.task), cfg.rollout.num_generations
    rewards = list(ro.rewards) if ro is not None else []
    totals = torch.tensor([x["total"] for x in rewards], dtype=torch.float64)  # [N]
    tokens = int(ro.completions.mask.sum()) if ro is not None else 0
    m: dict[str, Any] = {"step": step, "phase": "grpo",
                         "reward": float(totals.mean()) if rewards else 0.0,
                         "reward_std": float(totals.std()) if len(rewards) > 1 else 0.0}
    for k in sorted({k for x in rewards for k in x if k != "total"}):
        m[f"reward/{k}"] = sum(x.get(k, 0.0) for x in rewards) / len(rewards)
    m["accuracy"] = m.get(f"reward/{task.accuracy}", 0.0)
    m["format_rate"] = m.get("reward/format", 0.0)
    m.update(kl=loss.kl, loss=loss.loss, clip_fraction=loss.clip_fraction, entropy=loss.entropy)
    if ro is not None:
        m.update(task.rollout_stats(ro.answers, ro.truths, G, low_confidence=cfg.alerts.low_confidence))
    m["grad_norm"] = grad_norm
    m["lr"] = lr
    m["completion_length"] = tokens / max(1, len(rewards))
    m["zero_signal_fraction"] = grpo.zero_signal_fraction(totals.float(), G) if rewards else 0.0
    m.update({f"time/{k}": round(v, 4) for k, v in times.items()})
    m["rollout_tokens_per_s"] = tokens / max(times["rollout"], 1e-9)
    m["peak_memory_gb"] = peak_memory_gb
    m["skipped_images"] = skipped_images
    m["skipped_update"] = skipped_update
    m["sampling_draws"] = sampling.draws
    m["dropped_groups"] = sampling.dropped
    return m


def sample_rows(step: int, ro: Rollout, advantages: torch.Tensor, group_size: int, prompts: list[str],
                groups: int = 2) -> list[dict[str, Any]]:
    """Every completion of the first `groups` groups, with its reward, advantage and what is needed
    to find and draw its image again (`vrft-lite samples RUN`)."""
    rows = []
    for r, (text, p, reward) in enumerate(zip(ro.completions.texts, ro.completions.prompt_index, ro.rewards)):
        if p >= groups:
            continue
        rec = ro.records[p]
        image = str(Path(rec.image).resolve()) if isinstance(rec.image, (str, Path)) else rec.image_name
        rows.append({"step": step, "group": p, "index": r % group_size, "task": rec.task, "image": image,
                     "image_size": list(rec.image_size) if rec.image_size else None,
                     "resized_size": list(ro.batch.resized_sizes[p]), "prompt": prompts[p],
                     "solution": rec.solution, "completion": text, "reward": reward,
                     "advantage": float(advantages[r])})
    return rows


def heldout_table(rows: list[dict[str, Any]], *, preset: str | None = None, model: str | None = None) -> str:
    """The before/after table printed at the end of a run with eval.heldout > 0; for a preset of
    the paper, the paper's figures for its setting beneath (or why it has none)."""
    from visualrft_lite.paper import Setting, paper_block, setting_for_preset

    names = {"base": "before training", "sft": "after SFT warm-up", "grpo": "after GRPO"}
    metric = rows[0].get("metric", "accuracy")
    lines = [f"held-out ({rows[0]['n']} records, greedy)   format  {metric:>8}  reward", "-" * 58]
    for r in rows:
        lines.append(f"{names.get(r['stage'], r['stage']):<32} {r['format_rate']:>6.2f}  {r['accuracy']:>8.2f}  "
                     f"{r['reward']:>6.2f}")
    setting = setting_for_preset(preset, model) if preset else None
    if isinstance(setting, Setting):
        last = rows[-1]
        lines += paper_block(setting, {metric: last["accuracy"]})
        lines.append(f"  (measured: {names.get(last['stage'], last['stage'])}, on {last['n']} held-out records; "
                     f"`vrft-lite eval` scores the whole split)")
    return "\n".join(lines)
