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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visualrft_lite import checkpoint as ckpt
from visualrft_lite import grpo
from visualrft_lite.alerts import AlertMonitor
from visualrft_lite.config import Config
from visualrft_lite.data.records import Record
from visualrft_lite.data.skips import skipped_lines
from visualrft_lite.distributed import Processes
from visualrft_lite.errors import StopRequested, UserError
from visualrft_lite.logprobs import all_logprobs, completion_logprobs_and_entropy, fresh_features, micro_batches, pad_to
from visualrft_lite.modeling import load as mload
from visualrft_lite.modeling import ops
from visualrft_lite.rollout import Rollout, Sampled, SamplingStats, refill, sample_groups
from visualrft_lite.rundir import RunDir, prepare_output_dir, recover_run_logs
from visualrft_lite.session import Plan, Trainer, TrainState, default_run_dir, peak_memory_gb, training_records
from visualrft_lite.sft import sft_step
from visualrft_lite.step_metrics import grpo_metrics, heldout_table, sample_rows
from visualrft_lite.stopping import StopRequests
from visualrft_lite.trackers import NullTracker, make_tracker

__all__ = ["Plan", "TrainState", "Trainer", "TrainingStopped", "grpo_step", "sft", "train"]

MEMORY_HINT = ("reduce memory with --set rollout.max_batch_rows=16, rollout.num_generations=4, "
               "rollout.max_completion_length=128, model.max_pixels=200704 or train.micro_batch_size=1")


class TrainingStopped(UserError):
    """The run stopped early (interrupt, out of memory, non-finite losses); says how to resume."""


@dataclass(frozen=True)
class LossStats:
    """What the policy pass reports (token means over the step's completions)."""

    loss: float = 0.0
    kl: float = 0.0
    clip_fraction: float = 0.0
    entropy: float = 0.0
    finite: bool = True


# ----------------------------------------------------------------------------- one GRPO step


def grpo_step(t: Trainer) -> dict[str, Any]:
    cfg, G = t.cfg, t.cfg.rollout.num_generations
    t0 = t.clock()
    sampled = sample(t, t.records_for_step(cfg.train.prompts_per_step))
    sampling = SamplingStats()
    if cfg.grpo.dynamic_sampling:
        sampled, sampling = refill(sampled, lambda n: sample(t, t.extra_records(n)), group_size=G,
                                   want=cfg.train.prompts_per_step, max_draws=cfg.grpo.max_sampling_draws,
                                   pad=ops.special_tokens(t.processor).pad)
    t.log.skipped(sampled.skipped)
    ro = sampled.rollout
    times = {"rollout": t.clock() - t0, "reference": 0.0, "policy": 0.0, "optimizer": 0.0}

    if ro is not None:
        totals = grpo.aggregate_rewards(ro.rewards, G, cfg.grpo.reward_aggregation, weights=cfg.reward.weights)
        advantages = grpo.group_advantages(totals, G, cfg.grpo.scale_rewards).to(t.device)  # [P*G]
        loss_mask = ro.completions.mask
        if cfg.grpo.mask_truncated:  # DAPO: no loss for completions cut off at the length limit
            loss_mask, _ = grpo.mask_truncated(ro.completions.ids, loss_mask, ops.special_tokens(t.processor).eos)
        t1 = t.clock()
        ref_logp = old_logp = None
        if cfg.grpo.beta > 0:
            with ops.reference_mode(t.model):
                ref_logp = all_logprobs(t.model, ro.batch, ro.features, ro.completions, cfg.train.micro_batch_size,
                                        cfg.rollout.temperature)  # [P*G, T]
        if cfg.grpo.num_iterations > 1:
            old_logp = all_logprobs(t.model, ro.batch, ro.features, ro.completions, cfg.train.micro_batch_size,
                                    cfg.rollout.temperature)  # [P*G, T]
        times["reference"] = t.clock() - t1

    stats, grad_norm, skipped_update = LossStats(), 0.0, False
    for iteration in range(cfg.grpo.num_iterations):
        t2 = t.clock()
        if ro is not None:
            this = policy_backward(t, ro, advantages, loss_mask, ref_logp, old_logp)
            stats = this if iteration == 0 else LossStats(this.loss, this.kl, this.clip_fraction, stats.entropy,
                                                          this.finite)  # the first pass's entropy: the sampler's
        times["policy"] += t.clock() - t2
        t3 = t.clock()
        applied, norm = t.update(stats.finite, t.updater.grpo_lr(cfg.train.steps * cfg.grpo.num_iterations))
        grad_norm = norm if applied else grad_norm
        skipped_update |= not applied
        times["optimizer"] += t.clock() - t3
    t.state = t.state.after_update(not skipped_update)

    step = t.state.step
    if ro is not None and cfg.train.samples_every and (step % cfg.train.samples_every == 0
                                                        or step == t.plan.sft_steps + 1):
        t.log.samples(sample_rows(step, ro, advantages, G, [t.prompt_text(r) for r in ro.records]))
    m = grpo_metrics(cfg, step, ro, stats, grad_norm=grad_norm, lr=t.updater.optimizer.param_groups[0]["lr"],
                     times=times, skipped_images=len(sampled.skipped), skipped_update=skipped_update,
                     sampling=sampling, peak_memory_gb=peak_memory_gb(t.device))
    return t.processes.mean_metrics(m)


def sample(t: Trainer, records: list[Record]) -> Sampled:
    """One round of sampling: the records' groups, with the trainer's model and generator."""
    return sample_groups(t.model, t.processor, t.device, t.cfg, records, [t.prompt_text(r) for r in records],
                         t.generator)


def policy_backward(t: Trainer, ro: Rollout, advantages: torch.Tensor, loss_mask: torch.Tensor,
                    ref_logp: torch.Tensor | None, old_logp: torch.Tensor | None) -> LossStats:
    """Accumulate the GRPO loss gradient over micro-batches (rows of any prompts).

    `loss_mask` [N, T] is the completion mask, less truncated completions under
    grpo.mask_truncated; the log-prob passes always run over the whole completions.
    """
    cfg, g, c = t.cfg, t.cfg.grpo, ro.completions
    num_tok = int(loss_mask.sum())
    epsilon_low, epsilon_high = g.clip_epsilons()
    loss_sum = kl = clip = 0.0
    entropy_sum, entropy_tokens = 0.0, 0
    t.model.train()
    for rows in micro_batches(c.size, cfg.train.micro_batch_size):
        batch, features, index = ro.batch, ro.features, list(c.prompt_index[rows])
        if cfg.lora.train_vision:
            batch, features, index = fresh_features(t.model, batch, index)
        logp, entropy = completion_logprobs_and_entropy(t.model, batch, features, index, c.ids[rows], c.mask[rows],
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
            return LossStats(loss_sum, kl, clip, entropy_sum / max(1, entropy_tokens), finite=False)
        loss.backward()
        w = st["completion_tokens"] / max(1, num_tok)  # stats are this micro-batch's token means
        loss_sum += loss.item()
        kl += st.get("kl", 0.0) * w
        clip += st.get("clip_fraction", 0.0) * w
    return LossStats(loss_sum, kl, clip, entropy_sum / max(1, entropy_tokens))


# ----------------------------------------------------------------------------- held-out scores


def heldout(t: Trainer, stage: str, records: list[Record]) -> dict[str, Any] | None:
    """Score the held-out records with `vrft-lite eval`'s evaluator; a row for heldout.jsonl."""
    from visualrft_lite.evaluate import evaluate_records

    if not records or not t.processes.main:
        return None
    try:
        evaluation, _ = evaluate_records(t.model, t.processor, t.device, t.cfg, records, two_stage=t.cfg.eval.two_stage)
    except UserError:  # every held-out image unreadable: nothing to score
        return None
    m = evaluation.metrics
    row = {"step": t.step, "stage": stage, "n": m["n"], "format_rate": m["format_rate"] or 0.0,
           "metric": m["headline"], "accuracy": m[m["headline"]] or 0.0, "reward": m["mean_reward"] or 0.0}
    t.log.heldout(row, [{"step": t.step, "stage": stage, **r} for r in evaluation.rows])
    return row


# ----------------------------------------------------------------------------- the loop


def run(t: Trainer, *, quiet: bool = False, tracker: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Steps until the plan's end; (last step's metrics, held-out rows)."""
    from tqdm import tqdm

    from visualrft_lite.evaluate import heldout_records

    cfg, plan = t.cfg, t.plan
    held = heldout_records(cfg, cfg.eval.heldout) if cfg.eval.heldout and t.processes.main else []
    rows: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    say = print if t.processes.main and not quiet else (lambda *_: None)
    if t.step == 0 and held:
        say(f"scoring {len(held)} held-out records before training ...")
        rows.append(heldout(t, "base", held))
    bar = tqdm(total=plan.total, initial=t.step, disable=not t.processes.main or quiet, dynamic_ncols=True,
               desc="sft" if t.step < plan.sft_steps else "grpo")
    tracker = tracker or NullTracker()
    monitor = AlertMonitor(cfg.alerts, t.run / RunDir.ALERTS if t.processes.main else None)

    def on_first_signal(name: str) -> None:
        kept = ckpt.latest_checkpoint(t.run.path)
        say(f"\n{name}: finishing step {t.step + 1}, then saving a checkpoint. Press Ctrl-C again to stop at once: "
            + (f"the run would resume from {kept.name}" if kept else "nothing is saved yet, so all steps would be lost"))

    with StopRequests(announce=on_first_signal) as stop:
        try:
            while t.step < plan.total:
                if t.step == plan.sft_steps and t.step > 0 and plan.verb == "train":
                    rows.append(heldout(t, "sft", held))
                    t.start_grpo_phase()
                    bar.set_description("grpo")
                try:
                    last = sft_step(t) if t.step < plan.sft_steps else grpo_step(t)
                except torch.OutOfMemoryError:
                    t.updater.discard()
                    raise TrainingStopped(f"out of GPU memory at step {t.step + 1}; {MEMORY_HINT}; "
                                          f"last checkpoint: {save_quietly(t)}") from None
                t.log.metrics(last)
                tracker.log(last, step=last["step"])
                for alert in monitor.update(last):
                    tracker.alert(alert)
                    if t.processes.main and not quiet:
                        bar.write(f"warning: {alert.message}")
                bar.update(1)
                bar.set_postfix(postfix(last))
                if t.state.nonfinite_in_row >= cfg.train.max_nonfinite:
                    raise TrainingStopped(
                        f"{t.state.nonfinite_in_row} non-finite losses in a row at step {t.step}; lower the learning "
                        f"rate or raise grpo.beta; last checkpoint: {save_quietly(t)}")
                if stop.requested:
                    where = t.save()
                    raise StopRequested(f"stopped at step {t.step} ({stop.requested}); checkpoint saved to {where}; "
                                        f"resume with: vrft-lite {plan.verb} --resume {t.run.path}")
                if cfg.train.save_every and t.step % cfg.train.save_every == 0 and t.step < plan.total:
                    t.save()
        finally:
            bar.close()
            tracker.close()
    t.save()
    if t.processes.main:
        ckpt.save_final(t.run.path, t.model, t.processor)
    if held and last:  # at least one step ran
        say(f"scoring {len(held)} held-out records after training ...")
        rows.append(heldout(t, "grpo" if plan.total > plan.sft_steps else "sft", held))
    return last, [r for r in rows if r is not None]


def postfix(m: dict[str, Any]) -> dict[str, str]:
    if m["phase"] == "sft":
        return {"loss": f"{m['loss']:.3f}"}
    return {"reward": f"{m['reward']:.3f}", "acc": f"{m['accuracy']:.3f}", "kl": f"{m['kl']:.4f}"}


def save_quietly(t: Trainer) -> str:
    try:
        path = t.save()
        return str(path) if path else "none"
    except Exception as e:  # noqa: BLE001 - report, the original failure matters more
        return f"{ckpt.latest_checkpoint(t.run.path)} (saving the current step failed: {e})"


# ----------------------------------------------------------------------------- entry points


def train(cfg: Config, *, out: Path | None = None, resume: Path | None = None, force: bool = False,
          quiet: bool = False, plan: Plan | None = None) -> Path:
    """Run GRPO (after the optional SFT warm-up), or the given plan; returns the run directory."""
    plan = plan or Plan.for_train(cfg)
    processes = Processes(cfg.model.device)
    say = print if processes.main and not quiet else (lambda *_: None)
    # Everything cheap first: the model is reachable, the data loads, the folder is ours to write.
    cfg = mload.resolve_model(cfg)  # reachable, supported; resolved for its family (coords, LoRA targets)
    data = training_records(cfg)
    run_dir = RunDir(resume if resume is not None else out or default_run_dir(cfg))
    latest = ckpt.resume_checkpoint(run_dir.path, echo=say) if resume is not None else None
    if processes.main:  # one process writes the run directory; the others wait for it
        if latest is not None:
            run_dir.write_config(cfg)  # records a raised train.steps
            recover_run_logs(run_dir.path, int(latest.name.split("-")[1]), echo=say)
        else:
            note = prepare_output_dir(run_dir.path, kind="run", force=force, protected=local_inputs(cfg))
            if note:
                say(note)
            run_dir.write_config(cfg)
    processes.barrier()
    # before the model loads: a missing tracker package fails in a second, not after minutes
    tracker = make_tracker(cfg.train.report_to, run_dir.path, config=cfg.to_dict(),
                           project=cfg.train.wandb_project) if processes.main else NullTracker()
    say(f"loading {cfg.model.name} ({cfg.model.quant}) ...{startup_budget(cfg, data.records)}")
    t = Trainer(cfg, run_dir, plan, checkpoint=latest, processes=processes, data=data)
    if resume is None:
        t.log.skipped(t.skipped_at_load)
    if t.skipped_at_load and t.processes.main and not quiet:
        print(f"{len(t.records)} training records")
        print("\n".join(skipped_lines(t.skipped_at_load)))
    last, rows = run(t, quiet=quiet, tracker=tracker)
    if t.processes.main:
        if not quiet:
            if rows:
                print(heldout_table(rows, preset=cfg.name, model=cfg.model.name))
            print(summary_line(t, last))
        try:
            from visualrft_lite.plot import plot_run

            if last:
                plot_run(run_dir.path)
        except Exception as e:  # noqa: BLE001 - a plot must never fail a finished run
            if not quiet:
                print(f"(curves.png not written: {e})")
    return run_dir.path


def startup_budget(cfg: Config, records: list[Record]) -> str:
    """"; image tokens per image: ..." for the start-up line (records sampled, no image decoded)."""
    from visualrft_lite.data.images import sample_sizes

    budget = mload.token_budget(cfg.model)
    return f"; {budget.describe(sample_sizes(records))}" if budget is not None else ""


def local_inputs(cfg: Config) -> list[Path]:
    """The user's local model and data paths and plugins: --force never deletes a folder holding them."""
    names = [cfg.model.name, cfg.data.path, cfg.data.eval_path, *cfg.plugins]
    return [Path(n).expanduser() for n in names if n and Path(n).expanduser().exists()]


def sft(cfg: Config, **kwargs: Any) -> Path:
    """Supervised fine-tuning only (`vrft-lite sft`): train.steps supervised steps."""
    return train(cfg, plan=Plan.for_sft(cfg), **kwargs)


def summary_line(t: Trainer, last: dict[str, Any]) -> str:
    where = f"adapter in {t.run / RunDir.FINAL}; metrics in {t.run / RunDir.METRICS}"
    if not last:
        return f"nothing to do: the run is already at step {t.step}; {where}"
    if last["phase"] == "sft":
        return f"done: {t.step} steps; last supervised loss {last['loss']:.3f}; {where}"
    return (f"done: {t.step} steps; last step's sampled groups: reward {last['reward']:.3f}, "
            f"accuracy {last['accuracy']:.3f}, kl {last['kl']:.4f}; {where}")
