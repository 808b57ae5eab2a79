"""A step's rollout: G sampled completions per prompt, scored by the task's reward.

`sample_groups` encodes the step's prompts (each image through the vision tower once),
decodes all P×G completions together (`decoder.decode`) and scores them with one `Scorer` per
prompt (its ground truth parsed once per group); the `Rollout` it returns is read-only.
`refill` is DAPO's dynamic sampling: groups whose rewards all tie teach nothing, so they are
replaced by groups of freshly drawn prompts. It takes the sampler as a function, so it runs
(and is tested) on hand-made rollouts without a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from visualrft_lite import grpo
from visualrft_lite.config import Config
from visualrft_lite.data.common import Skip
from visualrft_lite.data.records import Record
from visualrft_lite.data.skips import unreadable
from visualrft_lite.decoder import Completions, Decoding, concat_completions, decode, encode_inputs
from visualrft_lite.errors import UserError
from visualrft_lite.modeling import ops
from visualrft_lite.rewards import Scorer


@dataclass(frozen=True)
class Rollout:
    """A step's prompts and their scored completions; read-only once built."""

    records: tuple[Record, ...]  # [P] the prompts that could be encoded, image sizes known
    batch: ops.PromptBatch
    features: ops.VisionFeatures  # one vision pass, shared by every pass of the step
    completions: Completions  # [P*G] rows, G per prompt, prompt-major
    rewards: tuple[dict[str, float], ...]  # [P*G] components and total
    answers: tuple[Any, ...]  # [P*G] each completion's answer as the reward read it
    truths: tuple[Any, ...]  # [P] each prompt's parsed ground truth

    @property
    def size(self) -> int:
        return self.batch.size

    @property
    def totals(self) -> torch.Tensor:
        return torch.tensor([r["total"] for r in self.rewards], dtype=torch.float32)  # [P*G]

    def keep(self, prompts: Sequence[int]) -> Rollout | None:
        """Only the groups of `prompts` (None when that is none)."""
        if not prompts:
            return None
        rows = [r for p in prompts for r, q in enumerate(self.completions.prompt_index) if q == p]
        return Rollout(tuple(self.records[p] for p in prompts), self.batch.select(prompts),
                       self.features.select(prompts), self.completions.for_prompts(prompts),
                       tuple(self.rewards[r] for r in rows), tuple(self.answers[r] for r in rows),
                       tuple(self.truths[p] for p in prompts))


def join(a: Rollout | None, b: Rollout | None, pad: int) -> Rollout | None:
    """Two rollouts as one (prompts of `b` after those of `a`)."""
    if a is None or b is None:
        return a or b
    return Rollout(a.records + b.records, ops.concat_batches([a.batch, b.batch]),
                   ops.VisionFeatures(a.features.per_image + b.features.per_image,
                                      a.features.deepstack + b.features.deepstack),
                   concat_completions([a.completions, b.completions], [a.batch.size, b.batch.size], pad),
                   a.rewards + b.rewards, a.answers + b.answers, a.truths + b.truths)


@dataclass(frozen=True)
class Sampled:
    """What a round of sampling returns: the rollout (None: no prompt could be encoded) and the
    images it could not use."""

    rollout: Rollout | None
    skipped: tuple[Skip, ...] = ()


def sample_groups(model: Any, processor: Any, device: torch.device, cfg: Config, records: Sequence[Record],
                  prompts: Sequence[str], generator: torch.Generator | None) -> Sampled:
    """G completions for every prompt, all decoded together, each group scored by its own Scorer."""
    enc = encode_inputs(model, processor, [r.image for r in records], prompts, device)
    skipped = tuple(unreadable(records[i], reason, "train-step") for i, reason in enc.failed.items())
    if enc.batch is None:
        return Sampled(None, skipped)
    longest = int(enc.batch.lengths.max())
    if longest > cfg.rollout.max_prompt_length:
        raise UserError(f"prompt of {longest} tokens exceeds rollout.max_prompt_length={cfg.rollout.max_prompt_length}; "
                        "lower model.max_pixels or raise the limit")
    completions = decode(model, processor, enc.batch, enc.features, Decoding.sampling(cfg.rollout),
                         per_prompt=cfg.rollout.num_generations, generator=generator,
                         max_rows=cfg.rollout.max_batch_rows)
    # every kept record knows its image's size from here on (box rewards and metrics need it)
    kept = tuple(records[i] if records[i].image_size else dataclasses.replace(records[i], image_size=image.size)
                 for i, image in zip(enc.kept, enc.images))
    rewards, answers, truths = score_groups(kept, completions, enc.batch.resized_sizes, cfg)
    return Sampled(Rollout(kept, enc.batch, enc.features, completions, rewards, answers, truths), skipped)


def score_groups(records: Sequence[Record], completions: Completions, resized_sizes: Sequence[tuple[int, int]],
                 cfg: Config) -> tuple[tuple[dict[str, float], ...], tuple[Any, ...], tuple[Any, ...]]:
    """(rewards [N], parsed answers [N], parsed truths [P]): one Scorer per prompt for its rows."""
    scorers = [Scorer(rec.task, rec.solution, image_size=rec.image_size, resized_size=resized_sizes[p],
                      options=cfg.reward) for p, rec in enumerate(records)]
    rewards = tuple(scorers[p].score(text) for text, p in zip(completions.texts, completions.prompt_index))
    answers = tuple(scorers[p].parse(text) for text, p in zip(completions.texts, completions.prompt_index))
    return rewards, answers, tuple(s.truth for s in scorers)


@dataclass(frozen=True)
class SamplingStats:
    """Dynamic sampling's counts for the step's metrics."""

    draws: int = 1
    """Rounds of sampling, the first included."""
    dropped: int = 0
    """Groups dropped because their rewards tied."""


def refill(first: Sampled, draw: Callable[[int], Sampled], *, group_size: int, want: int, max_draws: int,
           pad: int) -> tuple[Sampled, SamplingStats]:
    """DAPO's dynamic sampling: drop groups whose rewards all tie, sample `draw(n)` new prompts in
    their place, at most `max_draws` rounds in all (the first included); if the step is still
    short of `want` groups then, it trains on the groups it has."""
    kept: Rollout | None = None
    skipped = list(first.skipped)
    rollout, draws, dropped = first.rollout, 1, 0
    while True:
        if rollout is not None:
            tied = grpo.tied_groups(rollout.totals, group_size)  # [P'] True = every completion scored the same
            dropped += int(tied.sum())
            kept = join(kept, rollout.keep([p for p in range(rollout.size) if not tied[p]]), pad)
        have = kept.size if kept is not None else 0
        if have >= want or draws >= max_draws:
            return Sampled(kept, tuple(skipped)), SamplingStats(draws, dropped)
        more = draw(want - have)
        skipped += more.skipped
        rollout = more.rollout
        draws += 1
