"""A run's working state: the model and its adapter, the updater, the data order, the counters.

`Session` loads everything a run needs once (resuming from the newest checkpoint when asked)
and saves it atomically; `Plan` says which steps are supervised and which GRPO;
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
from visualrft_lite.config import Config, config_from_dict, read_yaml
from visualrft_lite.data.common import LoadResult
from visualrft_lite.data.records import Record
from visualrft_lite.data.sources import load_records
from visualrft_lite.distributed import Processes
from visualrft_lite.errors import UserError
from visualrft_lite.modeling import load as mload
from visualrft_lite.optim import Updater
from visualrft_lite.prompts import render_prompt
from visualrft_lite.runlog import RunLog

SFT_MODEL = "sft_model"  # run-dir folder of the merged SFT warm-up model (unquantised bases)


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


class Session:
    """What the loop works on: the model and its adapter, the updater, the data, the counters."""

    def __init__(self, cfg: Config, run_dir: Path, plan: Plan, *, resume: bool = False,
                 checkpoint: Path | None = None, processes: Processes | None = None,
                 data: LoadResult | None = None) -> None:
        self.cfg, self.run_dir, self.plan = cfg, run_dir, plan
        self.processes = p = processes or Processes(cfg.model.device)
        seed_everything(cfg.train.seed + p.rank)
        data = data or training_records(cfg)  # before the model: a data mistake fails in seconds

        latest = checkpoint or (ckpt.resume_checkpoint(run_dir, echo=None) if resume else None)
        state = ckpt.load_trainer_state(latest) if latest is not None else None
        if cfg.model.coords == "auto":  # `train` resolved it already; a Session built on its own does it here
            mload.resolve_model(cfg)
        mcfg = cfg.model
        if p.world > 1 or mcfg.device == "auto":
            mcfg = dataclasses.replace(mcfg, device=str(p.device))
        sft_model = run_dir / SFT_MODEL
        if state is not None and state["step"] > plan.sft_steps and (sft_model / "config.json").is_file():
            mcfg = dataclasses.replace(mcfg, name=str(sft_model.resolve()))  # GRPO continues on the merged SFT model
        self.mcfg = mcfg
        self.loaded = mload.load_base(mcfg)
        self.device = self.loaded.device
        if latest is not None:
            mload.load_adapter(self.loaded, latest, trainable=True, gradient_checkpointing=mcfg.gradient_checkpointing)
        else:
            mload.add_lora(self.loaded, cfg.lora, gradient_checkpointing=mcfg.gradient_checkpointing, seed=cfg.train.seed)
        self.updater = Updater(list(mload.trainable_parameters(self.model).values()), cfg.train, p)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.train.seed * 7919 + p.rank)

        self.records = data.records
        self.skipped_at_load = data.files
        self.stream = PromptStream(len(self.records), cfg.train.seed)
        self.extra_stream = PromptStream(len(self.records), cfg.train.seed + 1)  # dynamic sampling's draws
        self.extra_round = 0
        self.log = RunLog(run_dir, enabled=p.main)

        self.step = 0
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        if state is not None:
            self.updater.load_state_dict(state)
            self.step = state["step"]
            self.nonfinite_total = state.get("nonfinite_total", 0)
            self.extra_round = state.get("extra_round", 0)
            rng = state["rng"]
            ckpt.set_rng_state(rng[p.rank] if isinstance(rng, list) else rng, self.generator)

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def processor(self) -> Any:
        return self.loaded.processor

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return self.updater.params

    def prompt_text(self, record: Record) -> str:
        return render_prompt(record, self.cfg.data.prompt, coords=self.cfg.model.coords)

    def records_for_step(self, per_process: int) -> list[Record]:
        p = self.processes
        return [self.records[i] for i in self.stream.for_step(self.step, per_process, p.rank, p.world)]

    def extra_records(self, n: int) -> list[Record]:
        """n more prompts for dynamic sampling, from a stream of their own (resumable by count)."""
        p, per = self.processes, self.cfg.train.prompts_per_step
        index = self.extra_stream.for_step(self.extra_round, per, p.rank, p.world)[:n]
        self.extra_round += 1
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
            self.nonfinite_in_row = 0
            return True, self.updater.apply(lr)
        self.updater.discard()
        self.nonfinite_in_row += 1
        self.nonfinite_total += 1
        return False, 0.0

    def save(self) -> Path | None:
        """An atomic checkpoint of this step (every process takes part; the main one writes)."""
        state = {"step": self.step, **self.updater.state_dict(), "rng": self.processes.gather(ckpt.rng_state(self.generator)),
                 "nonfinite_total": self.nonfinite_total, "extra_round": self.extra_round, "config_name": self.cfg.name}
        path = ckpt.save_checkpoint(self.run_dir, self.step, self.model, state, keep=2) if self.processes.main else None
        self.processes.barrier()
        return path

    def start_grpo_phase(self) -> None:
        """After the SFT warm-up: the warmed-up model becomes GRPO's start and its KL reference.

        Unquantised bases get the SFT adapter merged in (saved to sft_model/, the base of the
        GRPO adapter) and a fresh adapter; a quantised base keeps training the same adapter
        (its reference stays the original base: merging into NF4 would re-quantise it).
        """
        if self.mcfg.quant == "none":
            mload.merge_adapters(self.loaded)  # every process merges its own copy (same weights)
            path = (self.run_dir / SFT_MODEL).resolve()  # recorded in the adapter: usable from anywhere
            if self.processes.main:
                mload.save_model(self.loaded, path)
            self.processes.barrier()
            self.mcfg = dataclasses.replace(self.mcfg, name=str(path))
            self.loaded.name = str(path)
            self.loaded.model.name_or_path = str(path)  # peft records it as the adapter's base
            mload.add_lora(self.loaded, self.cfg.lora, gradient_checkpointing=self.mcfg.gradient_checkpointing,
                           seed=self.cfg.train.seed)
        self.updater = Updater(list(mload.trainable_parameters(self.model).values()), self.cfg.train, self.processes)


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
