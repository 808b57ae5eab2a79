"""`vrft-lite train`: the explicit GRPO loop.

    for each step:
        rollout    sample G completions per prompt (image encoded once), score them
        advantage  group-relative: (r - mean) / (std + eps)
        reference  log-probs with adapters disabled (skipped when beta == 0)
        policy     micro-batched forward/backward of the GRPO loss (grads accumulate)
        optimizer  all-reduce LoRA grads (multi-process), clip, AdamW step, schedule
        log        metrics.jsonl, samples.jsonl, progress bar; checkpoint every N steps

With train.sft_warmup > 0 the loop first runs that many supervised steps (`sft_step`); with
eval.heldout > 0 it scores held-out records greedily before, after the warm-up and at the end.

Runs under accelerate: `accelerate launch --num_processes N vrft-lite train ...` is
data-parallel (each process its own copy of the 4-bit base; the LoRA gradients are
all-reduced explicitly before each optimizer step).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visualrft_lite import checkpoint as ckpt
from visualrft_lite import grpo
from visualrft_lite.config import Config, config_from_dict, read_yaml
from visualrft_lite.data.images import ImageLoadError, load_image
from visualrft_lite.data.records import Record
from visualrft_lite.data.sources import load_records
from visualrft_lite.errors import UserError
from visualrft_lite.modeling import load as mload
from visualrft_lite.modeling import ops
from visualrft_lite.prompts import render_prompt, sft_target
from visualrft_lite.rewards import score
from visualrft_lite.rollout import Group, sample_group

# The reward component each task reports as its headline accuracy.
HEADLINE = {"classify": "accuracy", "count": "accuracy", "choice": "accuracy",
            "detect": "iou", "ground": "iou", "point": "point"}
SFT_MODEL = "sft_model"  # run-dir folder of the merged SFT warm-up model (unquantised bases)
MEMORY_HINT = ("reduce memory with --set rollout.num_generations=4, rollout.max_completion_length=128, "
               "model.max_pixels=200704 or train.micro_batch_size=1")


class TrainingStopped(UserError):
    """The run stopped early (interrupt, out of memory, non-finite losses); says how to resume."""


# ----------------------------------------------------------------------------- set-up


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(out: Path, *, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UserError(f"run directory {out} is not empty; choose another --out, resume it with --resume {out}, or pass --force to overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def load_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    from visualrft_lite.config import apply_overrides

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass the --out of an earlier train")
    data = read_yaml(path)
    allowed = ("train.steps=", "train.save_every=", "train.samples_every=")
    for o in overrides:
        if not o.startswith(allowed):
            raise UserError(f"--resume keeps the run's config; only train.steps / save_every / samples_every may change (got --set {o})")
    return config_from_dict(apply_overrides(data, list(overrides)), str(path))


def make_optimizer(params: list[torch.nn.Parameter], cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "paged_adamw_8bit":
        if device.type != "cuda":
            raise UserError("train.optimizer=paged_adamw_8bit needs CUDA; use --set train.optimizer=adamw")
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)


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


# ----------------------------------------------------------------------------- data order


class PromptStream:
    """Deterministic order of prompts: epoch e is a permutation seeded by (seed, e).

    The position in the stream is a pure function of the step, so resuming needs only
    the step number, and each process of a data-parallel run takes its own slice.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: dict[int, list[int]] = {}

    def index(self, position: int) -> int:
        epoch, i = divmod(position, self.n)
        if epoch not in self._perms:
            perm = list(range(self.n))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(perm)
            self._perms = {epoch: perm}
        return self._perms[epoch][i]

    def for_step(self, step: int, per_process: int, rank: int, world: int) -> list[int]:
        start = step * per_process * world + rank * per_process
        return [self.index(p) for p in range(start, start + per_process)]


# ----------------------------------------------------------------------------- one step


@dataclass
class Rollout:
    """One prompt's group, scored."""

    record: Record
    prompt: ops.PromptInputs
    embeds: torch.Tensor  # [n_image_tokens, H] vision features, computed once
    group: Group
    rewards: list[dict[str, float]]  # per completion: components and total
    advantages: torch.Tensor | None = None  # [G]
    ref_logp: torch.Tensor | None = None  # [G, T]
    old_logp: torch.Tensor | None = None  # [G, T]


@dataclass
class StepStats:
    times: dict[str, float] = field(default_factory=lambda: {"rollout": 0.0, "reference": 0.0, "policy": 0.0, "optimizer": 0.0})
    skipped_images: int = 0


def completion_logprobs(model: Any, prompt: ops.PromptInputs, embeds: torch.Tensor, ids: torch.Tensor,
                        mask: torch.Tensor, temperature: float, chunk: int = 256) -> torch.Tensor:
    """Per-token log-probs of completions ids [b, T] after one prompt -> [b, T'] (0 where masked).

    T' is trimmed to the longest unmasked completion; only completion positions go through
    lm_head, chunk by chunk (never a full-vocabulary log-softmax over the whole sequence).
    """
    mask = mask.bool()
    T = int(mask.sum(1).max())
    ids, mask = ids[:, :T], mask[:, :T]
    hidden = ops.completion_hidden(model, prompt, embeds, ids)  # [b, T, H]
    weight, bias = ops.lm_head(model)
    flat = grpo.token_logprobs(hidden[mask], weight, ids[mask], bias=bias, temperature=temperature, chunk_size=chunk)  # [n]
    out = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)  # [b, T]
    return out.masked_scatter(mask, flat)


def group_logprobs(model: Any, r: Rollout, rows: slice, temperature: float, *, vision_grad: bool = False) -> torch.Tensor:
    g = r.group
    # A trainable vision tower needs its features in this micro-batch's graph; a frozen one
    # reuses the features computed once for the rollout.
    embeds = ops.image_embeds(model, r.prompt) if vision_grad else r.embeds
    return completion_logprobs(model, r.prompt, embeds, g.completion_ids[rows], g.completion_mask[rows], temperature)


def micro_batches(G: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, G)) for i in range(0, G, size)]


def pad_to(x: torch.Tensor, T: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, T - x.shape[1])) if x.shape[1] < T else x[:, :T]


class Trainer:
    """Holds the loop's state; `run()` is the loop."""

    def __init__(self, cfg: Config, run_dir: Path, *, resume: bool = False, quiet: bool = False,
                 mode: str = "grpo"):
        from accelerate import Accelerator

        self.cfg, self.run_dir, self.quiet, self.mode = cfg, run_dir, quiet, mode
        # Steps [0, sft_steps) are supervised, [sft_steps, total) GRPO; `vrft-lite sft` is all supervised.
        self.sft_steps = cfg.train.steps if mode == "sft" else cfg.train.sft_warmup
        self.total_steps = cfg.train.steps if mode == "sft" else cfg.train.sft_warmup + cfg.train.steps
        cpu = cfg.model.device == "cpu" or (cfg.model.device == "auto" and not torch.cuda.is_available())
        self.acc = Accelerator(cpu=cpu)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.main = self.acc.is_main_process
        seed_everything(cfg.train.seed + self.rank)

        mcfg = cfg.model
        if self.world > 1 or cfg.model.device == "auto":
            mcfg = dataclasses.replace(mcfg, device=str(self.acc.device))
        latest = ckpt.latest_checkpoint(run_dir) if resume else None
        state = ckpt.load_trainer_state(latest) if latest is not None else None
        sft_model = run_dir / SFT_MODEL
        if state is not None and state["step"] > self.sft_steps and (sft_model / "config.json").is_file():
            mcfg = dataclasses.replace(mcfg, name=str(sft_model))  # GRPO continues on the merged SFT model
        self.mcfg = mcfg
        self.loaded = mload.load_base(mcfg)
        self.device = self.loaded.device
        if latest is not None:
            mload.load_adapter(self.loaded, latest, trainable=True, gradient_checkpointing=mcfg.gradient_checkpointing)
        else:
            mload.add_lora(self.loaded, cfg.lora, gradient_checkpointing=mcfg.gradient_checkpointing, seed=cfg.train.seed)
        self.model = self.loaded.model
        self.processor = self.loaded.processor
        self.params = list(mload.trainable_parameters(self.model).values())
        self.optimizer = make_optimizer(self.params, cfg, self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.train.seed * 7919 + self.rank)

        data = load_records(cfg.data, "train")
        if not data.records:
            raise UserError(f"no usable training records in {cfg.data.path or cfg.data.source} (skipped: {dict(data.skipped)})")
        self.records = data.records
        self.skipped = dict(data.skipped)
        if self.skipped and self.main and not quiet:
            print(f"{len(self.records)} training records; skipped: "
                  + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())))
        self.stream = PromptStream(len(self.records), cfg.train.seed)

        self.step = 0
        self.updates = 0
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.updates = state["step"], state["updates"]
            self.nonfinite_total = state.get("nonfinite_total", 0)
            ckpt.set_rng_state(state["rng"][self.rank] if isinstance(state["rng"], list) else state["rng"], self.generator)
        self.stop_requested: str | None = None
        self.last_rollouts: list[Rollout] = []
        self.heldout_records: list[Record] | None = None
        self.heldout_rows: list[dict[str, Any]] = []

    def heldout_score(self, stage: str) -> dict[str, Any] | None:
        """Greedy answers on held-out records: format rate, accuracy/IoU, mean reward."""
        n = self.cfg.eval.heldout
        if n == 0 or not self.main:
            return None
        if self.heldout_records is None:
            self.heldout_records = load_records(self.cfg.data, "eval").records[:n]
        if not self.heldout_records:
            return None
        headline = HEADLINE[self.cfg.data.task]
        answers = []
        for rec in self.heldout_records:
            try:
                image = load_image(rec.image)
            except ImageLoadError:
                continue
            prompt = ops.encode_prompt(self.model, self.processor, image, self.prompt_text(rec), self.device)
            with torch.no_grad():
                embeds = ops.image_embeds(self.model, prompt)
            group = sample_group(self.model, self.processor, prompt, embeds, self.cfg.rollout, num=1, greedy=True)
            reward = score(rec.task, group.texts[0], rec.solution, image_size=rec.image_size or image.size,
                           resized_size=prompt.resized_size, options=self.cfg.reward)
            answers.append({"step": self.step, "stage": stage, "image": rec.image_name, "solution": rec.solution,
                            "completion": group.texts[0], "reward": reward})
        if not answers:  # every held-out image unreadable: nothing to score
            return None
        scores = [a["reward"] for a in answers]
        row = {"step": self.step, "stage": stage, "n": len(scores),
               "format_rate": float(np.mean([x["format"] for x in scores])),
               "accuracy": float(np.mean([x.get(headline, 0.0) for x in scores])),
               "reward": float(np.mean([x["total"] for x in scores]))}
        with (self.run_dir / "heldout.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        with (self.run_dir / "heldout_answers.jsonl").open("a") as f:  # what the table's numbers are made of
            f.writelines(json.dumps(a) + "\n" for a in answers)
        self.heldout_rows.append(row)
        return row

    def prompt_text(self, record: Record) -> str:
        return render_prompt(record, self.cfg.data.prompt, coords=self.cfg.model.coords)

    def clock(self) -> float:
        """Wall time for the phase timers; on CUDA, after the queued kernels finish."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def phase(self) -> str:
        return "sft" if self.step < self.sft_steps else "grpo"

    # -- pieces of a step ------------------------------------------------------

    def rollout(self, indices: list[int], stats: StepStats) -> list[Rollout]:
        cfg = self.cfg
        out = []
        for i in indices:
            rec = self.records[i]
            try:
                image = load_image(rec.image)
            except ImageLoadError:
                stats.skipped_images += 1
                continue
            prompt = ops.encode_prompt(self.model, self.processor, image, self.prompt_text(rec), self.device)
            if prompt.length > cfg.rollout.max_prompt_length:
                raise UserError(f"prompt of {prompt.length} tokens exceeds rollout.max_prompt_length={cfg.rollout.max_prompt_length}; lower model.max_pixels or raise the limit")
            with torch.no_grad():
                embeds = ops.image_embeds(self.model, prompt)  # once per prompt, shared by all G
            group = sample_group(self.model, self.processor, prompt, embeds, cfg.rollout, generator=self.generator)
            size = rec.image_size or image.size
            rewards = [score(rec.task, text, rec.solution, image_size=size, resized_size=prompt.resized_size,
                             options=cfg.reward) for text in group.texts]
            out.append(Rollout(rec, prompt, embeds, group, rewards))
        return out

    def logprobs_no_grad(self, rollouts: list[Rollout], reference: bool) -> None:
        cfg = self.cfg
        with torch.no_grad():
            for r in rollouts:
                parts = []
                for rows in micro_batches(r.group.completion_ids.shape[0], cfg.train.micro_batch_size):
                    if reference:
                        with ops.reference_mode(self.model):
                            parts.append(group_logprobs(self.model, r, rows, cfg.rollout.temperature))
                    else:
                        parts.append(group_logprobs(self.model, r, rows, cfg.rollout.temperature))
                T = max(p.shape[1] for p in parts)
                logp = torch.cat([pad_to(p, T) for p in parts])  # [G, T]
                if reference:
                    r.ref_logp = logp
                else:
                    r.old_logp = logp

    def policy_update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """Accumulate the GRPO loss gradient over micro-batches; returns summed stats."""
        cfg = self.cfg
        g = cfg.grpo
        num_seq = sum(r.group.completion_ids.shape[0] for r in rollouts)
        num_tok = int(sum(r.group.completion_mask.sum() for r in rollouts))
        totals = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
        finite = True
        self.model.train()
        for r in rollouts:
            for rows in micro_batches(r.group.completion_ids.shape[0], cfg.train.micro_batch_size):
                logp = group_logprobs(self.model, r, rows, cfg.rollout.temperature,
                                      vision_grad=cfg.lora.train_vision)  # [b, T]
                T = logp.shape[1]
                mask = r.group.completion_mask[rows][:, :T].to(logp.dtype)
                loss, st = grpo.grpo_loss(
                    logp, mask, r.advantages[rows],
                    old_logp=None if r.old_logp is None else pad_to(r.old_logp[rows], T),
                    ref_logp=None if r.ref_logp is None else pad_to(r.ref_logp[rows], T),
                    beta=g.beta, loss_type=g.loss_type, epsilon_low=g.epsilon_low, epsilon_high=g.epsilon_high,
                    max_completion_length=cfg.rollout.max_completion_length,
                    num_sequences=num_seq, num_tokens=num_tok,
                )
                if not torch.isfinite(loss):
                    finite = False
                    break
                loss.backward()
                w = st["completion_tokens"] / max(1, num_tok)  # stats are this micro-batch's token means
                totals["loss"] += loss.item()
                totals["kl"] += st.get("kl", 0.0) * w
                totals["clip_fraction"] += st.get("clip_fraction", 0.0) * w
            if not finite:
                break
        totals["finite"] = float(finite)
        return totals

    def optimizer_step(self, lr: float | None = None) -> float:
        """All-reduce grads across processes, clip, step; returns the grad norm."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.world > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            torch.distributed.all_reduce(flat)
            flat /= self.world
            offset = 0
            for p, g in zip(self.params, grads):
                n = g.numel()
                p.grad = flat[offset : offset + n].view_as(p).clone()
                offset += n
        max_norm = self.cfg.train.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm if max_norm > 0 else float("inf"))
        t = self.cfg.train
        if lr is None:
            lr = t.learning_rate * lr_factor(self.updates, warmup=t.warmup_steps,
                                             total=t.steps * self.cfg.grpo.num_iterations, schedule=t.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        return float(norm)

    # -- the step --------------------------------------------------------------

    def sft_step(self) -> dict[str, Any]:
        """One supervised step: token-mean cross-entropy of the answer text after each prompt."""
        cfg = self.cfg
        t0 = self.clock()
        indices = self.stream.for_step(self.step, cfg.train.sft_batch_size, self.rank, self.world)
        batch = []
        skipped = 0
        for i in indices:
            rec = self.records[i]
            try:
                image = load_image(rec.image)
            except ImageLoadError:
                skipped += 1
                continue
            prompt = ops.encode_prompt(self.model, self.processor, image, self.prompt_text(rec), self.device)
            target = sft_target(rec, rec.image_size or image.size, coords=cfg.model.coords, resized_size=prompt.resized_size)
            ids = target_ids(self.processor, target, self.device)  # [1, T]
            batch.append((prompt, ids))
        num_tok = sum(ids.shape[1] for _, ids in batch)
        loss_total = 0.0
        self.model.train()
        for prompt, ids in batch:
            with torch.set_grad_enabled(cfg.lora.train_vision):  # a frozen tower keeps no graph
                embeds = ops.image_embeds(self.model, prompt)
            logp = completion_logprobs(self.model, prompt, embeds, ids, torch.ones_like(ids), 1.0)  # [1, T]
            loss = -logp.sum() / num_tok  # summed over the batch: the token mean of the whole batch
            if not torch.isfinite(loss):
                loss_total = float("nan")
                break
            loss.backward()
            loss_total += loss.item()
        t1 = self.clock()
        finite = math.isfinite(loss_total) and bool(batch)
        grad_norm = 0.0
        if finite:
            grad_norm = self.optimizer_step(lr=cfg.train.sft_learning_rate)
            self.nonfinite_in_row = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            if batch:
                self.nonfinite_in_row += 1
                self.nonfinite_total += 1
        self.step += 1
        m = {"step": self.step, "phase": "sft", "loss": loss_total, "tokens": num_tok, "grad_norm": grad_norm,
             "lr": cfg.train.sft_learning_rate, "time/sft": round(t1 - t0, 4),
             "time/optimizer": round(self.clock() - t1, 4), "skipped_images": skipped,
             "peak_memory_gb": peak_memory_gb(self.device)}
        return self.reduce_metrics(m)

    def train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        stats = StepStats()
        t0 = self.clock()
        indices = self.stream.for_step(self.step, cfg.train.prompts_per_step, self.rank, self.world)
        rollouts = self.rollout(indices, stats)
        stats.times["rollout"] = self.clock() - t0
        completion_tokens = int(sum(r.group.completion_mask.sum() for r in rollouts))

        G = cfg.rollout.num_generations
        if rollouts:
            totals = torch.tensor([x["total"] for r in rollouts for x in r.rewards], dtype=torch.float32)  # [P*G]
            adv = grpo.group_advantages(totals, G, cfg.grpo.scale_rewards).to(self.device)  # [P*G]
            for i, r in enumerate(rollouts):
                r.advantages = adv[i * G : (i + 1) * G]

        t1 = self.clock()
        if cfg.grpo.beta > 0 and rollouts:
            self.logprobs_no_grad(rollouts, reference=True)
        if cfg.grpo.num_iterations > 1 and rollouts:
            self.logprobs_no_grad(rollouts, reference=False)
        stats.times["reference"] = self.clock() - t1

        loss_stats: dict[str, float] = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
        grad_norm = 0.0
        skipped_update = False
        for _ in range(cfg.grpo.num_iterations):
            t2 = self.clock()
            if rollouts:
                loss_stats = self.policy_update(rollouts)
            stats.times["policy"] += self.clock() - t2
            t3 = self.clock()
            finite = bool(loss_stats.get("finite", 1.0))
            if self.world > 1:  # every process must agree to skip, or the all-reduce deadlocks
                flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
                torch.distributed.all_reduce(flag)
                finite = float(flag) == 0.0
            if finite:
                grad_norm = self.optimizer_step()
                self.nonfinite_in_row = 0
            else:
                self.optimizer.zero_grad(set_to_none=True)
                self.nonfinite_in_row += 1
                self.nonfinite_total += 1
                skipped_update = True
            stats.times["optimizer"] += self.clock() - t3
        self.step += 1
        self.last_rollouts = rollouts
        return self.metrics(rollouts, loss_stats, grad_norm, stats, completion_tokens, skipped_update)

    def metrics(self, rollouts: list[Rollout], loss_stats: dict[str, float], grad_norm: float,
                stats: StepStats, completion_tokens: int, skipped_update: bool) -> dict[str, Any]:
        G = self.cfg.rollout.num_generations
        rewards = [x for r in rollouts for x in r.rewards]
        totals = torch.tensor([x["total"] for x in rewards], dtype=torch.float64) if rewards else torch.zeros(0)
        keys = sorted({k for x in rewards for k in x if k != "total"})
        headline = HEADLINE[self.cfg.data.task]
        m: dict[str, Any] = {
            "step": self.step,
            "phase": "grpo",
            "reward": float(totals.mean()) if len(totals) else 0.0,
            "reward_std": float(totals.std()) if len(totals) > 1 else 0.0,
        }
        for k in keys:
            m[f"reward/{k}"] = float(np.mean([x.get(k, 0.0) for x in rewards]))
        m["accuracy"] = m.get(f"reward/{headline}", 0.0)
        m["format_rate"] = m.get("reward/format", 0.0)
        m["kl"] = loss_stats.get("kl", 0.0)
        m["loss"] = loss_stats.get("loss", 0.0)
        m["clip_fraction"] = loss_stats.get("clip_fraction", 0.0)
        m["grad_norm"] = grad_norm
        m["lr"] = self.optimizer.param_groups[0]["lr"]
        m["completion_length"] = completion_tokens / max(1, len(rewards))
        m["zero_signal_fraction"] = grpo.zero_signal_fraction(totals.float(), G) if len(totals) else 0.0
        for k, v in stats.times.items():
            m[f"time/{k}"] = round(v, 4)
        m["rollout_tokens_per_s"] = completion_tokens / max(stats.times["rollout"], 1e-9)
        m["peak_memory_gb"] = peak_memory_gb(self.device)
        m["skipped_images"] = stats.skipped_images
        m["skipped_update"] = skipped_update
        return self.reduce_metrics(m)

    def reduce_metrics(self, m: dict[str, Any]) -> dict[str, Any]:
        """Average numeric metrics over processes (the main process logs them)."""
        if self.world == 1:
            return m
        keys = [k for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"]
        vec = torch.tensor([float(m[k]) for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(vec)
        vec /= self.world
        for k, v in zip(keys, vec.tolist()):
            m[k] = v
        return m

    # -- checkpoints and the loop ---------------------------------------------

    def trainer_state(self) -> dict[str, Any]:
        rng = ckpt.rng_state(self.generator)
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        return {"step": self.step, "updates": self.updates, "optimizer": self.optimizer.state_dict(),
                "rng": rng, "nonfinite_total": self.nonfinite_total, "config_name": self.cfg.name}

    def save(self) -> Path | None:
        state = self.trainer_state()  # collective: every process takes part
        path = None
        if self.main:
            path = ckpt.save_checkpoint(self.run_dir, self.step, self.model, state, keep=2)
        self.acc.wait_for_everyone()
        return path

    def write_samples(self, path: Path, rollouts: list[Rollout], per_prompt: int = 2) -> None:
        """A few completions with their rewards, for reading what the policy writes."""
        with path.open("a") as f:
            for r in rollouts[:2]:
                for text, rew in list(zip(r.group.texts, r.rewards))[:per_prompt]:
                    f.write(json.dumps({"step": self.step, "task": r.record.task, "prompt": self.prompt_text(r.record),
                                        "solution": r.record.solution, "completion": text, "reward": rew}) + "\n")

    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        cfg = self.cfg
        metrics_file = self.run_dir / "metrics.jsonl"
        samples_file = self.run_dir / "samples.jsonl"
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.main or self.quiet,
                   desc=self.phase(), dynamic_ncols=True)
        last: dict[str, Any] = {}
        previous_handlers = self._install_signal_handlers()
        if self.step == 0:
            self.heldout_score("base")
        try:
            while self.step < self.total_steps:
                if self.step == self.sft_steps and self.step > 0 and self.mode == "grpo":
                    self.heldout_score("sft")
                    self.start_grpo_phase()
                    bar.set_description("grpo")
                try:
                    last = self.sft_step() if self.phase() == "sft" else self.train_step()
                except torch.OutOfMemoryError:
                    self.optimizer.zero_grad(set_to_none=True)
                    where = self._save_quietly()
                    raise TrainingStopped(f"out of GPU memory at step {self.step + 1}; {MEMORY_HINT}; last checkpoint: {where}") from None
                if self.main:
                    with metrics_file.open("a") as f:
                        f.write(json.dumps(last) + "\n")
                    every = cfg.train.samples_every
                    if every and last["phase"] == "grpo" and (self.step % every == 0 or self.step == self.sft_steps + 1):
                        self.write_samples(samples_file, self.last_rollouts)
                    bar.update(1)
                    bar.set_postfix(self.postfix(last))
                if self.nonfinite_in_row >= cfg.train.max_nonfinite:
                    where = self._save_quietly()
                    raise TrainingStopped(
                        f"{self.nonfinite_in_row} non-finite losses in a row at step {self.step}; lower the learning rate "
                        f"or raise grpo.beta; last checkpoint: {where}")
                if cfg.train.save_every and self.step % cfg.train.save_every == 0 and self.step < self.total_steps:
                    self.save()
                if self.stop_requested:
                    where = self.save()
                    verb = "sft" if self.mode == "sft" else "train"
                    raise TrainingStopped(
                        f"{self.stop_requested} at step {self.step}; checkpoint saved to {where}; "
                        f"resume with: vrft-lite {verb} --resume {self.run_dir}")
        finally:
            bar.close()
            self._restore_signal_handlers(previous_handlers)
        self.save()
        if self.main:
            ckpt.save_final(self.run_dir, self.model, self.processor)
        self.heldout_score("sft" if self.mode == "sft" else "grpo")
        return last

    @staticmethod
    def postfix(m: dict[str, Any]) -> dict[str, str]:
        if m["phase"] == "sft":
            return {"loss": f"{m['loss']:.3f}"}
        return {"reward": f"{m['reward']:.3f}", "acc": f"{m['accuracy']:.3f}", "kl": f"{m['kl']:.4f}"}

    def start_grpo_phase(self) -> None:
        """After the SFT warm-up: the warmed-up model becomes GRPO's start and its KL reference.

        Unquantised bases get the SFT adapter merged in (saved to sft_model/, the base of the
        GRPO adapter) and a fresh adapter; a quantised base keeps training the same adapter
        (its reference stays the original base: merging into NF4 would re-quantise it).
        """
        if self.mcfg.quant == "none":
            mload.merge_adapters(self.loaded)  # every process merges its own copy (same weights)
            path = self.run_dir / SFT_MODEL
            if self.main:
                mload.save_model(self.loaded, path)
            self.acc.wait_for_everyone()
            self.mcfg = dataclasses.replace(self.mcfg, name=str(path))
            self.loaded.name = str(path)
            self.loaded.model.name_or_path = str(path)  # peft records it as the adapter's base
            mload.add_lora(self.loaded, self.cfg.lora, gradient_checkpointing=self.mcfg.gradient_checkpointing,
                           seed=self.cfg.train.seed)
            self.model = self.loaded.model
            self.params = list(mload.trainable_parameters(self.model).values())
        self.optimizer = make_optimizer(self.params, self.cfg, self.device)
        self.updates = 0

    def _save_quietly(self) -> str:
        try:
            path = self.save()
            return str(path) if path else "none"
        except Exception as e:  # noqa: BLE001 - report, the original failure matters more
            latest = ckpt.latest_checkpoint(self.run_dir)
            return f"{latest} (saving the current step failed: {e})"

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.stop_requested:  # second signal: stop now, the last checkpoint stays loadable
                raise KeyboardInterrupt
            self.stop_requested = f"{name} received"
            if self.main and not self.quiet:
                print(f"\n{name}: finishing step {self.step + 1}, then saving a checkpoint (send again to abort)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)


def target_ids(processor: Any, text: str, device: torch.device) -> torch.Tensor:
    """Token ids of a supervised completion, ending with the end-of-turn token -> [1, T]."""
    eos_ids, _, _ = ops.special_token_ids(processor)
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"] + [eos_ids[0]]
    return torch.tensor([ids], dtype=torch.long, device=device)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB


def train(cfg: Config, *, out: Path | None = None, resume: Path | None = None, force: bool = False,
          quiet: bool = False, mode: str = "grpo") -> Path:
    """Run GRPO (after the optional SFT warm-up), or SFT alone (mode="sft"); returns the run directory."""
    if resume is not None:
        run_dir = resume
        if ckpt.latest_checkpoint(run_dir) is None:
            raise UserError(f"{run_dir} has no complete checkpoint to resume from")
        (run_dir / "config.yaml").write_text(cfg.to_yaml())  # records a raised train.steps
        truncate_log(run_dir / "metrics.jsonl", int(ckpt.latest_checkpoint(run_dir).name.split("-")[1]))
    else:
        run_dir = out or default_run_dir(cfg)
        prepare_run_dir(run_dir, force=force)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
    trainer = Trainer(cfg, run_dir, resume=resume is not None, quiet=quiet, mode=mode)
    last = trainer.run()
    if trainer.main and not quiet:
        if trainer.heldout_rows:
            print(heldout_table(trainer.heldout_rows))
        print(summary_line(trainer, last))
    if trainer.main:
        try:
            from visualrft_lite.plot import plot_run

            plot_run(run_dir)
        except Exception as e:  # noqa: BLE001 - a plot must never fail a finished run
            if not quiet:
                print(f"(curves.png not written: {e})")
    return run_dir


def heldout_table(rows: list[dict[str, Any]]) -> str:
    """The before/after table printed at the end of a run with eval.heldout > 0."""
    names = {"base": "before training", "sft": "after SFT warm-up", "grpo": "after GRPO"}
    lines = [f"held-out ({rows[0]['n']} records, greedy)   format  accuracy  reward",
             "-" * 58]
    for r in rows:
        lines.append(f"{names.get(r['stage'], r['stage']):<32} {r['format_rate']:>6.2f}  {r['accuracy']:>8.2f}  {r['reward']:>6.2f}")
    return "\n".join(lines)


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines of steps after the checkpoint a resume starts from (they will be redone)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def summary_line(trainer: Trainer, last: dict[str, Any]) -> str:
    if not last:
        return f"nothing to do: the run is already at step {trainer.step}; final adapter in {trainer.run_dir / 'final'}"
    return (f"done: {trainer.step} steps, reward {last['reward']:.3f}, accuracy {last['accuracy']:.3f}, "
            f"kl {last['kl']:.4f}; adapter in {trainer.run_dir / 'final'}; metrics in {trainer.run_dir / 'metrics.jsonl'}")
