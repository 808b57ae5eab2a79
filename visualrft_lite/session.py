"""What a run works on: `Trainer` (the model and its adapter, the updater, the data, the logs)
and `TrainState` (the counters a step advances and a checkpoint keeps).

`Trainer` loads everything a run needs once (resuming from the newest checkpoint when asked)
and saves it atomically; its parts are long-lived resources, and the only things a step
changes are the adapter's weights (through the updater) and `state`, replaced whole by
`TrainState.after_update`. `Plan` says which steps are supervised and which GRPO;
`PromptStream` makes the prompts of a step a pure function of the step number.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visualrft_lite import checkpoint as ckpt
from visualrft_lite.config import Config
from visualrft_lite.data.common import LoadResult
from visualrft_lite.data.records import Record
from visualrft_lite.data.sources import load_records
from visualrft_lite.distributed import Processes
from visualrft_lite.errors import UserError
from visualrft_lite.modeling import load as mload
from visualrft_lite.optim import Updater
from visualrft_lite.prompts import render_prompt
from visualrft_lite.rundir import RunDir
from visualrft_lite.runlog import RunLog


@dataclass(frozen=True)
class Plan:
    """Steps [0, sft_steps) are supervised, [sft_steps, total) GRPO."""

    sft_steps: int
    total: int
    verb: str  # the command that resumes it

    @classmethod
    def for_train(cls, cfg: Config) -> Plan:
        return cls(cfg.train.sft_warmup, cfg.train.sft_warmup + cfg.train.steps, "train")

    @classmethod
    def for_sft(cls, cfg: Config) -> Plan:
        return cls(cfg.train.steps, cfg.train.steps, "sft")


@dataclass(frozen=True)
class TrainState:
    """The counters of a run: what a step advances and a checkpoint restores."""

    step: int = 0
    """Steps done (optimizer steps, applied or skipped)."""
    extra_round: int = 0
    """Rounds of extra prompts drawn for dynamic sampling so far (their stream's position)."""
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0

    def after_update(self, applied: bool) -> TrainState:
        """The state after one step whose update was applied (or skipped for a non-finite loss)."""
        return dataclasses.replace(
            self, step=self.step + 1, nonfinite_in_row=0 if applied else self.nonfinite_in_row + 1,
            nonfinite_total=self.nonfinite_total + (not applied))

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> TrainState:
        return cls(step=saved["step"], extra_round=saved.get("extra_round", 0),
                   nonfinite_total=saved.get("nonfinite_total", 0))

    def to_checkpoint(self) -> dict[str, Any]:
        return {"step": self.step, "extra_round": self.extra_round, "nonfinite_total": self.nonfinite_total}


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


class Trainer:
    """The model and its adapter, the updater, the data and the logs of one run, plus its `state`."""

    def __init__(self, cfg: Config, run_dir: Path | RunDir, plan: Plan, *, resume: bool = False,
                 checkpoint: Path | None = None, processes: Processes | None = None,
                 data: LoadResult | None = None) -> None:
        """`cfg` must be resolved for its model (`modeling.load.resolve_model`), as `train` does."""
        if cfg.model.coords == "auto":
            raise ValueError("the config is not resolved for its model yet (modeling.load.resolve_model)")
        self.cfg, self.plan = cfg, plan
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.processes = p = processes or Processes(cfg.model.device)
        seed_everything(cfg.train.seed + p.rank)
        data = data or training_records(cfg)  # before the model: a data mistake fails in seconds

        latest = checkpoint or (ckpt.resume_checkpoint(self.run.path, echo=None) if resume else None)
        saved = ckpt.load_trainer_state(latest) if latest is not None else None
        mcfg = cfg.model
        if p.world > 1 or mcfg.device == "auto":
            mcfg = dataclasses.replace(mcfg, device=str(p.device))
        sft_model = self.run / RunDir.SFT_MODEL
        if saved is not None and saved["step"] > plan.sft_steps and (sft_model / "config.json").is_file():
            mcfg = dataclasses.replace(mcfg, name=str(sft_model.resolve()))  # GRPO continues on the merged SFT model
        self.model_cfg = mcfg
        self.loaded = mload.load_base(mcfg)
        self.device = self.loaded.device
        if latest is not None:
            mload.load_adapter(self.loaded, latest, trainable=True, gradient_checkpointing=mcfg.gradient_checkpointing)
        else:
            mload.add_lora(self.loaded, cfg.lora, gradient_checkpointing=mcfg.gradient_checkpointing, seed=cfg.train.seed)
        self.updater = self._new_updater()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.train.seed * 7919 + p.rank)

        self.records = data.records
        self.skipped_at_load = data.files
        self.stream = PromptStream(len(self.records), cfg.train.seed)
        self.extra_stream = PromptStream(len(self.records), cfg.train.seed + 1)  # dynamic sampling's draws
        self.log = RunLog(self.run, enabled=p.main)
        self.state = TrainState()
        if saved is not None:
            self.updater.load_state_dict(saved)
            self.state = TrainState.from_checkpoint(saved)
            rng = saved["rng"]
            ckpt.set_rng_state(rng[p.rank] if isinstance(rng, list) else rng, self.generator)

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def processor(self) -> Any:
        return self.loaded.processor

    @property
    def step(self) -> int:
        return self.state.step

    def prompt_text(self, record: Record) -> str:
        return render_prompt(record, self.cfg.data.prompt, coords=self.cfg.model.coords)

    def records_for_step(self, per_process: int) -> list[Record]:
        p = self.processes
        return [self.records[i] for i in self.stream.for_step(self.state.step, per_process, p.rank, p.world)]

    def extra_records(self, n: int) -> list[Record]:
        """n more prompts for dynamic sampling, from a stream of their own (resumable by count)."""
        p, per = self.processes, self.cfg.train.prompts_per_step
        index = self.extra_stream.for_step(self.state.extra_round, per, p.rank, p.world)[:n]
        self.state = dataclasses.replace(self.state, extra_round=self.state.extra_round + 1)
        return [self.records[i] for i in index]

    def clock(self) -> float:
        """Wall time for the phase timers; on CUDA, after the queued kernels finish."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def update(self, finite: bool, lr: float) -> tuple[bool, float]:
        """Apply the accumulated gradients if every process's loss was finite; (applied, grad norm).

        The one place that decides, for every kind of step: all processes apply the update or
        all skip it, so none waits alone in the gradient average.
        """
        if self.processes.all_agree(finite):
            return True, self.updater.apply(lr)
        self.updater.discard()
        return False, 0.0

    def save(self) -> Path | None:
        """An atomic checkpoint of this step (every process takes part; the main one writes)."""
        saved = {**self.state.to_checkpoint(), **self.updater.state_dict(), "config_name": self.cfg.name,
                 "rng": self.processes.gather(ckpt.rng_state(self.generator))}
        path = ckpt.save_checkpoint(self.run.path, self.state.step, self.model, saved, keep=2) \
            if self.processes.main else None
        self.processes.barrier()
        return path

    def start_grpo_phase(self) -> None:
        """After the SFT warm-up: the warmed-up model becomes GRPO's start and its KL reference.

        Unquantised bases get the SFT adapter folded in (saved to sft_model/, the base of the
        GRPO adapter) and a fresh adapter; a quantised base keeps training the same adapter
        (its reference stays the original base: folding into NF4 would re-quantise it).
        Either way GRPO gets a fresh optimizer.
        """
        if self.model_cfg.quant == "none":
            mload.fold_adapter(self.loaded)  # every process folds its own copy (same weights)
            path = (self.run / RunDir.SFT_MODEL).resolve()  # recorded in the adapter: usable from anywhere
            if self.processes.main:
                mload.save_model(self.loaded, path)
            self.processes.barrier()
            self.model_cfg = dataclasses.replace(self.model_cfg, name=str(path))
            self.loaded.name = str(path)
            self.loaded.model.name_or_path = str(path)  # peft records it as the adapter's base
            mload.add_lora(self.loaded, self.cfg.lora, gradient_checkpointing=self.model_cfg.gradient_checkpointing,
                           seed=self.cfg.train.seed)
        self.updater = self._new_updater()

    def _new_updater(self) -> Updater:
        return Updater(list(mload.trainable_parameters(self.model).values()), self.cfg.train, self.processes)


def training_records(cfg: Config) -> LoadResult:
    """The train split's records; none usable is a one-line error naming what was skipped."""
    data = load_records(cfg.data, "train")
    if not data.records:
        raise UserError(f"no usable training records in {cfg.data.path or cfg.data.source} ({data.summary()})")
    return data


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
