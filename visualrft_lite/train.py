"""`vrft-lite train` and `vrft-lite sft`: the explicit loop.

One GRPO step, top-down in `grpo_step`:

    records    this process's prompts of the step (a pure function of the step: resumable)
    rollout    every prompt prefilled once (its image through the vision tower once), all
               P×G completions decoded together, scored by the task's reward
    advantage  group-relative: (r - mean) / (std + eps)
    reference  log-probs with the adapters disabled (skipped when beta == 0)
    policy     micro-batched forward/backward of the GRPO loss (gradients accumulate)
    update     every process applies it or every process skips it (a non-finite loss
               anywhere); gradients averaged over processes, clipped, AdamW step
    metrics    averaged over processes; metrics.jsonl, samples.jsonl, the progress bar

With train.sft_warmup > 0 the run first takes that many supervised steps (`sft_step`);
`vrft-lite sft` is supervised steps only. With eval.heldout > 0 the run scores that many
held-out records with the evaluator of `vrft-lite eval` before training, after the warm-up
and at the end.

Runs under accelerate: `accelerate launch --num_processes N vrft-lite train ...` is
data-parallel (each process its own copy of the 4-bit base; see `distributed.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from visualrft_lite import checkpoint as ckpt
from visualrft_lite import grpo
from visualrft_lite.alerts import AlertMonitor, rollout_answer_stats
from visualrft_lite.config import Config
from visualrft_lite.data.records import Record
from visualrft_lite.data.skips import skipped_lines
from visualrft_lite.distributed import Processes
from visualrft_lite.errors import StopRequested, UserError
from visualrft_lite.groups import Rollout, refill, rollout
from visualrft_lite.logprobs import all_logprobs, completion_logprobs_and_entropy, fresh_features, micro_batches, pad_to
from visualrft_lite.modeling import ops
from visualrft_lite.modeling import load as mload
from visualrft_lite.rundir import prepare_output_dir, recover_run_logs
from visualrft_lite.session import Plan, Session, default_run_dir, load_run_config, peak_memory_gb, training_records
from visualrft_lite.sft import sft_step
from visualrft_lite.stopping import StopRequests
from visualrft_lite.trackers import NullTracker, make_tracker

__all__ = ["Plan", "Session", "TrainingStopped", "grpo_step", "load_run_config", "sft", "train"]

SAMPLED_ACCURACY = {"classify": "accuracy", "count": "accuracy", "choice": "accuracy",
                    "detect": "iou", "ground": "iou", "point": "point"}
"""The reward component each task reports as the sampled groups' accuracy in metrics.jsonl."""
MEMORY_HINT = ("reduce memory with --set rollout.max_batch_rows=16, rollout.num_generations=4, "
               "rollout.max_completion_length=128, model.max_pixels=200704 or train.micro_batch_size=1")


class TrainingStopped(UserError):
    """The run stopped early (interrupt, out of memory, non-finite losses); says how to resume."""


# ----------------------------------------------------------------------------- one GRPO step


def grpo_step(s: Session) -> dict[str, Any]:
    cfg, G = s.cfg, s.cfg.rollout.num_generations
    t0 = s.clock()
    ro, skipped = rollout(s, s.records_for_step(cfg.train.prompts_per_step))
    sampling = {"sampling_draws": 1, "dropped_groups": 0}
    if cfg.grpo.dynamic_sampling:
        ro, skipped, sampling = refill(s, ro, skipped)
    times = {"rollout": s.clock() - t0, "reference": 0.0, "policy": 0.0, "optimizer": 0.0}

    loss_stats: dict[str, float] = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
    grad_norm, skipped_update = 0.0, False
    if ro is not None:
        totals = grpo.aggregate_rewards(ro.rewards, G, cfg.grpo.reward_aggregation, weights=cfg.reward.weights)
        advantages = grpo.group_advantages(totals, G, cfg.grpo.scale_rewards).to(s.device)  # [P*G]
        loss_mask = ro.completions.mask
        if cfg.grpo.mask_truncated:  # DAPO: no loss for completions cut off at the length limit
            loss_mask, _ = grpo.mask_truncated(ro.completions.ids, loss_mask, ops.special_tokens(s.processor).eos)
        t1 = s.clock()
        ref_logp = old_logp = None
        if cfg.grpo.beta > 0:
            with ops.reference_mode(s.model):
                ref_logp = all_logprobs(s.model, ro.batch, ro.features, ro.completions, cfg.train.micro_batch_size,
                                        cfg.rollout.temperature)  # [P*G, T]
        if cfg.grpo.num_iterations > 1:
            old_logp = all_logprobs(s.model, ro.batch, ro.features, ro.completions, cfg.train.micro_batch_size,
                                    cfg.rollout.temperature)  # [P*G, T]
        times["reference"] = s.clock() - t1
    for _ in range(cfg.grpo.num_iterations):
        t2 = s.clock()
        finite = True
        if ro is not None:
            stats = policy_backward(s, ro, advantages, loss_mask, ref_logp, old_logp)
            finite = stats.pop("finite") == 1.0
            loss_stats = {**stats, "entropy": loss_stats.get("entropy", stats["entropy"])}  # first pass's entropy
        times["policy"] += s.clock() - t2
        t3 = s.clock()
        applied, norm = s.update(finite, s.updater.grpo_lr(cfg.train.steps * cfg.grpo.num_iterations))
        grad_norm = norm if applied else grad_norm
        skipped_update |= not applied
        times["optimizer"] += s.clock() - t3
    s.step += 1
    if ro is not None and cfg.train.samples_every and (s.step % cfg.train.samples_every == 0
                                                        or s.step == s.plan.sft_steps + 1):
        s.log.samples(sample_rows(s, ro, advantages))
    m = grpo_metrics(s, ro, loss_stats, grad_norm, times, skipped, skipped_update)
    m.update(sampling)
    return s.processes.mean_metrics(m)


def policy_backward(s: Session, ro: Rollout, advantages: torch.Tensor, loss_mask: torch.Tensor,
                    ref_logp: torch.Tensor | None, old_logp: torch.Tensor | None) -> dict[str, float]:
    """Accumulate the GRPO loss gradient over micro-batches (rows of any prompts); summed stats.

    `loss_mask` [N, T] is the completion mask, less truncated completions under
    grpo.mask_truncated; the log-prob passes always run over the whole completions.
    """
    cfg, g, c = s.cfg, s.cfg.grpo, ro.completions
    num_tok = int(loss_mask.sum())
    epsilon_low, epsilon_high = g.clip_epsilons()
    totals = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "finite": 1.0}
    entropy_sum, entropy_tokens = 0.0, 0
    s.model.train()
    for rows in micro_batches(c.size, cfg.train.micro_batch_size):
        batch, features, index = ro.batch, ro.features, list(c.prompt_index[rows])
        if cfg.lora.train_vision:
            batch, features, index = fresh_features(s.model, batch, index)
        logp, entropy = completion_logprobs_and_entropy(s.model, batch, features, index, c.ids[rows], c.mask[rows],
                                                        cfg.rollout.temperature)  # [b, T], [n]
        entropy_sum, entropy_tokens = entropy_sum + float(entropy.sum()), entropy_tokens + entropy.numel()
        T = logp.shape[1]
        loss, st = grpo.grpo_loss(
            logp, loss_mask[rows][:, :T].to(logp.dtype), advantages[rows],
            old_logp=None if old_logp is None else pad_to(old_logp[rows], T),
            ref_logp=None if ref_logp is None else pad_to(ref_logp[rows], T),
            beta=g.beta, loss_type=g.loss_type, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
            importance_sampling=g.importance_sampling,
            max_completion_length=cfg.rollout.max_completion_length, num_sequences=c.size, num_tokens=num_tok,
        )
        if not torch.isfinite(loss):
            totals["finite"] = 0.0
            break
        loss.backward()
        w = st["completion_tokens"] / max(1, num_tok)  # stats are this micro-batch's token means
        totals["loss"] += loss.item()
        totals["kl"] += st.get("kl", 0.0) * w
        totals["clip_fraction"] += st.get("clip_fraction", 0.0) * w
    totals["entropy"] = entropy_sum / max(1, entropy_tokens)
    return totals


def grpo_metrics(s: Session, ro: Rollout | None, loss_stats: dict[str, float], grad_norm: float,
                 times: dict[str, float], skipped_images: int, skipped_update: bool) -> dict[str, Any]:
    rewards = list(ro.rewards) if ro is not None else []
    totals = torch.tensor([x["total"] for x in rewards], dtype=torch.float64)
    tokens = int(ro.completions.mask.sum()) if ro is not None else 0
    m: dict[str, Any] = {"step": s.step, "phase": "grpo",
                         "reward": float(totals.mean()) if rewards else 0.0,
                         "reward_std": float(totals.std()) if len(rewards) > 1 else 0.0}
    for k in sorted({k for x in rewards for k in x if k != "total"}):
        m[f"reward/{k}"] = float(np.mean([x.get(k, 0.0) for x in rewards]))
    m["accuracy"] = m.get(f"reward/{SAMPLED_ACCURACY[s.cfg.data.task]}", 0.0)
    m["format_rate"] = m.get("reward/format", 0.0)
    m.update({k: loss_stats.get(k, 0.0) for k in ("kl", "loss", "clip_fraction", "entropy")})
    if ro is not None:
        m.update(rollout_answer_stats(
            s.cfg.data.task, ro.completions.texts, [r.solution for r in ro.records], s.cfg.rollout.num_generations,
            image_sizes=[r.image_size for r in ro.records], resized_sizes=ro.batch.resized_sizes,
            options=s.cfg.reward, low_confidence=s.cfg.alerts.low_confidence))
    m["grad_norm"] = grad_norm
    m["lr"] = s.updater.optimizer.param_groups[0]["lr"]
    m["completion_length"] = tokens / max(1, len(rewards))
    m["zero_signal_fraction"] = grpo.zero_signal_fraction(totals.float(), s.cfg.rollout.num_generations) if rewards else 0.0
    m.update({f"time/{k}": round(v, 4) for k, v in times.items()})
    m["rollout_tokens_per_s"] = tokens / max(times["rollout"], 1e-9)
    m["peak_memory_gb"] = peak_memory_gb(s.device)
    m["skipped_images"] = skipped_images
    m["skipped_update"] = skipped_update
    return m


def sample_rows(s: Session, ro: Rollout, advantages: torch.Tensor, prompts: int = 2) -> list[dict[str, Any]]:
    """Every completion of the first few groups, with its reward, advantage and what is needed to
    find and draw its image again (`vrft-lite samples RUN`)."""
    rows = []
    G = s.cfg.rollout.num_generations
    for r, (text, p, reward) in enumerate(zip(ro.completions.texts, ro.completions.prompt_index, ro.rewards)):
        if p >= prompts:
            continue
        rec = ro.records[p]
        image = str(Path(rec.image).resolve()) if isinstance(rec.image, (str, Path)) else rec.image_name
        rows.append({"step": s.step, "group": p, "index": r % G, "task": rec.task, "image": image,
                     "image_size": list(rec.image_size) if rec.image_size else None,
                     "resized_size": list(ro.batch.resized_sizes[p]), "prompt": s.prompt_text(rec),
                     "solution": rec.solution, "completion": text, "reward": reward,
                     "advantage": float(advantages[r])})
    return rows


# ----------------------------------------------------------------------------- held-out scores


def heldout(s: Session, stage: str, records: list[Record]) -> dict[str, Any] | None:
    """Score the held-out records with `vrft-lite eval`'s evaluator; a row for heldout.jsonl."""
    from visualrft_lite.evaluate import evaluate_records

    if not records or not s.processes.main:
        return None
    try:
        evaluation, _ = evaluate_records(s.model, s.processor, s.device, s.cfg, records, two_stage=s.cfg.eval.two_stage)
    except UserError:  # every held-out image unreadable: nothing to score
        return None
    m = evaluation.metrics
    row = {"step": s.step, "stage": stage, "n": m["n"], "format_rate": m["format_rate"] or 0.0,
           "metric": m["headline"], "accuracy": m[m["headline"]] or 0.0, "reward": m["mean_reward"] or 0.0}
    s.log.heldout(row, [{"step": s.step, "stage": stage, **r} for r in evaluation.rows])
    return row


def heldout_table(rows: list[dict[str, Any]]) -> str:
    """The before/after table printed at the end of a run with eval.heldout > 0."""
    names = {"base": "before training", "sft": "after SFT warm-up", "grpo": "after GRPO"}
    metric = rows[0].get("metric", "accuracy")
    lines = [f"held-out ({rows[0]['n']} records, greedy)   format  {metric:>8}  reward", "-" * 58]
    for r in rows:
        lines.append(f"{names.get(r['stage'], r['stage']):<32} {r['format_rate']:>6.2f}  {r['accuracy']:>8.2f}  {r['reward']:>6.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the loop


def run(s: Session, *, quiet: bool = False, tracker: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Steps until the plan's end; (last step's metrics, held-out rows)."""
    from tqdm import tqdm

    from visualrft_lite.evaluate import heldout_records

    cfg, plan = s.cfg, s.plan
    held = heldout_records(cfg, cfg.eval.heldout) if cfg.eval.heldout and s.processes.main else []
    rows: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    say = print if s.processes.main and not quiet else (lambda *_: None)
    if s.step == 0 and held:
        say(f"scoring {len(held)} held-out records before training ...")
        rows.append(heldout(s, "base", held))
    bar = tqdm(total=plan.total, initial=s.step, disable=not s.processes.main or quiet, dynamic_ncols=True,
               desc="sft" if s.step < plan.sft_steps else "grpo")
    tracker = tracker or NullTracker()
    monitor = AlertMonitor(cfg.alerts, s.run_dir / "alerts.jsonl" if s.processes.main else None)
    def on_first_signal(name: str) -> None:
        kept = ckpt.latest_checkpoint(s.run_dir)
        say(f"\n{name}: finishing step {s.step + 1}, then saving a checkpoint. Press Ctrl-C again to stop at once: "
            + (f"the run would resume from {kept.name}" if kept else "nothing is saved yet, so all steps would be lost"))

    with StopRequests(announce=on_first_signal) as stop:
        try:
            while s.step < plan.total:
                if s.step == plan.sft_steps and s.step > 0 and plan.verb == "train":
                    rows.append(heldout(s, "sft", held))
                    s.start_grpo_phase()
                    bar.set_description("grpo")
                try:
                    last = sft_step(s) if s.step < plan.sft_steps else grpo_step(s)
                except torch.OutOfMemoryError:
                    s.updater.discard()
                    raise TrainingStopped(f"out of GPU memory at step {s.step + 1}; {MEMORY_HINT}; "
                                          f"last checkpoint: {save_quietly(s)}") from None
                s.log.metrics(last)
                tracker.log(last, step=last["step"])
                for alert in monitor.update(last):
                    tracker.alert(alert)
                    if s.processes.main and not quiet:
                        bar.write(f"warning: {alert.message}")
                bar.update(1)
                bar.set_postfix(postfix(last))
                if s.nonfinite_in_row >= cfg.train.max_nonfinite:
                    raise TrainingStopped(
                        f"{s.nonfinite_in_row} non-finite losses in a row at step {s.step}; lower the learning rate "
                        f"or raise grpo.beta; last checkpoint: {save_quietly(s)}")
                if stop.requested:
                    where = s.save()
                    raise StopRequested(f"stopped at step {s.step} ({stop.requested}); checkpoint saved to {where}; "
                                        f"resume with: vrft-lite {plan.verb} --resume {s.run_dir}")
                if cfg.train.save_every and s.step % cfg.train.save_every == 0 and s.step < plan.total:
                    s.save()
        finally:
            bar.close()
            tracker.close()
    s.save()
    if s.processes.main:
        ckpt.save_final(s.run_dir, s.model, s.processor)
    if held and last:  # at least one step ran
        say(f"scoring {len(held)} held-out records after training ...")
        rows.append(heldout(s, "grpo" if plan.total > plan.sft_steps else "sft", held))
    return last, [r for r in rows if r is not None]


def postfix(m: dict[str, Any]) -> dict[str, str]:
    if m["phase"] == "sft":
        return {"loss": f"{m['loss']:.3f}"}
    return {"reward": f"{m['reward']:.3f}", "acc": f"{m['accuracy']:.3f}", "kl": f"{m['kl']:.4f}"}


def save_quietly(s: Session) -> str:
    try:
        path = s.save()
        return str(path) if path else "none"
    except Exception as e:  # noqa: BLE001 - report, the original failure matters more
        return f"{ckpt.latest_checkpoint(s.run_dir)} (saving the current step failed: {e})"


# ----------------------------------------------------------------------------- entry points


def train(cfg: Config, *, out: Path | None = None, resume: Path | None = None, force: bool = False,
          quiet: bool = False, plan: Plan | None = None) -> Path:
    """Run GRPO (after the optional SFT warm-up), or the given plan; returns the run directory."""
    plan = plan or Plan.for_train(cfg)
    processes = Processes(cfg.model.device)
    say = print if processes.main and not quiet else (lambda *_: None)
    # Everything cheap first: the model is reachable, the data loads, the folder is ours to write.
    mload.resolve_model(cfg)  # reachable, supported; model.coords: auto -> the checkpoint's convention
    data = training_records(cfg)
    run_dir = resume if resume is not None else out or default_run_dir(cfg)
    latest = ckpt.resume_checkpoint(run_dir, echo=say) if resume is not None else None
    if processes.main:  # one process writes the run directory; the others wait for it
        if latest is not None:
            (run_dir / "config.yaml").write_text(cfg.to_yaml())  # records a raised train.steps
            recover_run_logs(run_dir, int(latest.name.split("-")[1]), echo=say)
        else:
            note = prepare_output_dir(run_dir, kind="run", force=force, protected=local_inputs(cfg))
            if note:
                say(note)
            (run_dir / "config.yaml").write_text(cfg.to_yaml())
    processes.barrier()
    # before the model loads: a missing tracker package fails in a second, not after minutes
    tracker = make_tracker(cfg.train.report_to, run_dir, config=cfg.to_dict(),
                           project=cfg.train.wandb_project) if processes.main else NullTracker()
    say(f"loading {cfg.model.name} ({cfg.model.quant}) ...")
    s = Session(cfg, run_dir, plan, checkpoint=latest, processes=processes, data=data)
    if resume is None:
        s.log.skipped(s.skipped_at_load)
    if s.skipped_at_load and s.processes.main and not quiet:
        print(f"{len(s.records)} training records")
        print("\n".join(skipped_lines(s.skipped_at_load)))
    last, rows = run(s, quiet=quiet, tracker=tracker)
    if s.processes.main:
        if not quiet:
            if rows:
                print(heldout_table(rows))
            print(summary_line(s, last))
        try:
            from visualrft_lite.plot import plot_run

            if last:
                plot_run(run_dir)
        except Exception as e:  # noqa: BLE001 - a plot must never fail a finished run
            if not quiet:
                print(f"(curves.png not written: {e})")
    return run_dir


def local_inputs(cfg: Config) -> list[Path]:
    """The user's local model and data paths: --force never deletes a folder holding them."""
    names = [cfg.model.name, cfg.data.path, cfg.data.eval_path]
    return [Path(n).expanduser() for n in names if n and Path(n).expanduser().exists()]


def sft(cfg: Config, **kwargs: Any) -> Path:
    """Supervised fine-tuning only (`vrft-lite sft`): train.steps supervised steps."""
    return train(cfg, plan=Plan.for_sft(cfg), **kwargs)


def summary_line(s: Session, last: dict[str, Any]) -> str:
    where = f"adapter in {s.run_dir / 'final'}; metrics in {s.run_dir / 'metrics.jsonl'}"
    if not last:
        return f"nothing to do: the run is already at step {s.step}; {where}"
    if last["phase"] == "sft":
        return f"done: {s.step} steps; last supervised loss {last['loss']:.3f}; {where}"
    return (f"done: {s.step} steps; last step's sampled groups: reward {last['reward']:.3f}, "
            f"accuracy {last['accuracy']:.3f}, kl {last['kl']:.4f}; {where}")
