"""A step's groups: G sampled completions per prompt, scored by the task's reward.

`rollout` encodes the step's prompts (each image through the vision tower once), decodes all
P×G completions together (`rollout.decode`) and scores them; the result is read-only.
`refill` is DAPO's dynamic sampling: groups whose rewards all tie teach nothing, so they are
replaced by groups of freshly drawn prompts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from visualrft_lite import grpo
from visualrft_lite.data.records import Record
from visualrft_lite.data.skips import unreadable
from visualrft_lite.errors import UserError
from visualrft_lite.modeling import ops
from visualrft_lite.rewards import score
from visualrft_lite.rollout import Completions, Decoding, concat_completions, decode, encode_inputs
from visualrft_lite.session import Session


@dataclass(frozen=True)
class Rollout:
    """A step's prompts and their scored completions; read-only once built."""

    records: tuple[Record, ...]  # [P] the prompts that could be encoded
    batch: ops.PromptBatch
    features: ops.VisionFeatures  # one vision pass, shared by every pass of the step
    completions: Completions  # [P*G] rows, G per prompt, prompt-major
    rewards: tuple[dict[str, float], ...]  # [P*G] components and total

    @property
    def totals(self) -> torch.Tensor:
        return torch.tensor([r["total"] for r in self.rewards], dtype=torch.float32)  # [P*G]

    def keep(self, prompts: list[int]) -> Rollout | None:
        """Only the groups of `prompts` (None when that is none)."""
        if not prompts:
            return None
        rows = [r for p in prompts for r, q in enumerate(self.completions.prompt_index) if q == p]
        return Rollout(tuple(self.records[p] for p in prompts), self.batch.select(prompts),
                       self.features.select(prompts), self.completions.for_prompts(prompts),
                       tuple(self.rewards[r] for r in rows))


def join(a: Rollout | None, b: Rollout | None, pad: int) -> Rollout | None:
    """Two rollouts as one (prompts of `b` after those of `a`)."""
    if a is None or b is None:
        return a or b
    return Rollout(a.records + b.records, ops.concat_batches([a.batch, b.batch]),
                   ops.VisionFeatures(a.features.per_image + b.features.per_image),
                   concat_completions([a.completions, b.completions], [a.batch.size, b.batch.size], pad),
                   a.rewards + b.rewards)


def rollout(s: Session, records: list[Record]) -> tuple[Rollout | None, int]:
    """Sample G completions for every prompt, all decoded together; (rollout, images skipped)."""
    cfg = s.cfg
    enc = encode_inputs(s.model, s.processor, [r.image for r in records], [s.prompt_text(r) for r in records], s.device)
    s.log.skipped([unreadable(records[i], reason, "train-step") for i, reason in enc.failed.items()])
    if enc.batch is None:
        return None, len(enc.failed)
    longest = int(enc.batch.lengths.max())
    if longest > cfg.rollout.max_prompt_length:
        raise UserError(f"prompt of {longest} tokens exceeds rollout.max_prompt_length={cfg.rollout.max_prompt_length}; "
                        "lower model.max_pixels or raise the limit")
    completions = decode(s.model, s.processor, enc.batch, enc.features, Decoding.sampling(cfg.rollout),
                         per_prompt=cfg.rollout.num_generations, generator=s.generator,
                         max_rows=cfg.rollout.max_batch_rows)
    # every kept record knows its image's size from here on (box rewards and metrics need it)
    kept = tuple(records[i] if records[i].image_size else dataclasses.replace(records[i], image_size=image.size)
                 for i, image in zip(enc.kept, enc.images))
    rewards = tuple(
        score(kept[p].task, text, kept[p].solution, image_size=kept[p].image_size,
              resized_size=enc.batch.resized_sizes[p], options=cfg.reward)
        for text, p in zip(completions.texts, completions.prompt_index))
    return Rollout(kept, enc.batch, enc.features, completions, rewards), len(enc.failed)


def refill(s: Session, ro: Rollout | None, skipped: int) -> tuple[Rollout | None, int, dict[str, int]]:
    """DAPO's dynamic sampling: drop groups whose rewards all tie, roll out new prompts in their
    place, at most grpo.max_sampling_draws rounds in all; (rollout, images skipped, counts)."""
    cfg, G, P = s.cfg, s.cfg.rollout.num_generations, s.cfg.train.prompts_per_step
    pad = ops.special_tokens(s.processor).pad
    kept, draws, dropped = None, 1, 0
    while True:
        if ro is not None:
            tied = grpo.tied_groups(ro.totals, G)  # [P'] True = every completion scored the same
            dropped += int(tied.sum())
            kept = join(kept, ro.keep([p for p in range(ro.batch.size) if not tied[p]]), pad)
        have = kept.batch.size if kept is not None else 0
        if have >= P or draws >= cfg.grpo.max_sampling_draws:
            return kept, skipped, {"sampling_draws": draws, "dropped_groups": dropped}
        ro, more = rollout(s, s.extra_records(P - have))
        skipped += more
        draws += 1
