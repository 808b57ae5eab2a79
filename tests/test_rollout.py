"""A step's groups without a model: DAPO's dynamic-sampling refill on hand-made rollouts, the
metrics line of a step, and the training state's counters."""

from __future__ import annotations

import pytest
import torch

from visualrft_lite.config import load_config
from visualrft_lite.data.records import Record
from visualrft_lite.decoder import Completions
from visualrft_lite.modeling import ops
from visualrft_lite.rollout import Rollout, Sampled, SamplingStats, refill
from visualrft_lite.session import TrainState
from visualrft_lite.step_metrics import grpo_metrics
from visualrft_lite.train import LossStats

G = 2


def fake_rollout(names: list[str], totals: list[list[float]]) -> Rollout:
    """One prompt per name (its image 4 patches), G completions each with the given totals."""
    P = len(names)
    batch = ops.PromptBatch(
        input_ids=torch.arange(P * 3).reshape(P, 3), attention_mask=torch.ones(P, 3, dtype=torch.long),
        position_ids=torch.zeros(3, P, 3, dtype=torch.long), next_position=torch.full((P,), 3),
        pixel_values=torch.arange(P * 4 * 2, dtype=torch.float32).reshape(P * 4, 2),
        image_grid_thw=torch.tensor([[1, 2, 2]] * P), resized_sizes=((28, 28),) * P, texts=tuple(names))
    features = ops.VisionFeatures(tuple(torch.full((1, 2), float(p)) for p in range(P)))
    N = P * G
    completions = Completions(ids=torch.arange(N * 2).reshape(N, 2), mask=torch.ones(N, 2, dtype=torch.long),
                              texts=tuple(f"{names[r // G]}-{r % G}" for r in range(N)),
                              prompt_index=tuple(r // G for r in range(N)))
    rewards = tuple({"format": 1.0, "accuracy": t - 1.0, "total": t} for group in totals for t in group)
    records = tuple(Record(f"{n}.png", "classify", n, image_size=(28, 28)) for n in names)
    return Rollout(records, batch, features, completions, rewards, answers=tuple(c for c in completions.texts),
                   truths=tuple((n,) for n in names))


def test_refill_drops_tied_groups_and_draws_their_replacements():
    # a step of 3 prompts: b ties (1, 1), so 1 more is drawn: d, which ties (2, 2); then e
    # (1, 2) fills the step. Three rounds, two groups dropped, a, c and e train.
    first = Sampled(fake_rollout(["a", "b", "c"], [[1, 2], [1, 1], [2, 1]]))
    queue = [fake_rollout(["d"], [[2, 2]]), fake_rollout(["e"], [[1, 2]])]
    asked: list[int] = []

    def draw(n: int) -> Sampled:
        asked.append(n)
        return Sampled(queue.pop(0))

    out, stats = refill(first, draw, group_size=G, want=3, max_draws=3, pad=0)
    assert asked == [1, 1] and stats == SamplingStats(draws=3, dropped=2)
    assert [r.solution for r in out.rollout.records] == ["a", "c", "e"]


def test_refill_keeps_the_rows_of_the_groups_it_keeps():
    first = Sampled(fake_rollout(["a", "b"], [[1, 1], [1, 2]]))
    out, stats = refill(first, lambda n: Sampled(fake_rollout(["c"], [[2, 1]])), group_size=G, want=2, max_draws=2,
                        pad=0)
    ro = out.rollout
    assert [r.solution for r in ro.records] == ["b", "c"] and stats == SamplingStats(2, 1)
    assert ro.completions.texts == ("b-0", "b-1", "c-0", "c-1") and ro.completions.prompt_index == (0, 0, 1, 1)
    assert [r["total"] for r in ro.rewards] == [1, 2, 2, 1] and ro.truths == (("b",), ("c",))
    assert ro.batch.texts == ("b", "c") and [f[0, 0].item() for f in ro.features.per_image] == [1.0, 0.0]
    assert ro.batch.pixel_values.shape == (8, 2)  # each prompt's own 4 patches, in order


def test_refill_stops_after_max_draws_with_what_it_has():
    tied = lambda n: Sampled(fake_rollout(["t"] * n, [[1, 1]] * n))  # noqa: E731 - every draw ties
    out, stats = refill(Sampled(fake_rollout(["a"], [[0, 0]])), tied, group_size=G, want=2, max_draws=3, pad=0)
    assert out.rollout is None and stats == SamplingStats(draws=3, dropped=5)  # 1 + 2 + 2 tied groups


def test_refill_with_nothing_tied_draws_nothing():
    def never(n: int) -> Sampled:
        raise AssertionError("no draw expected")

    first = Sampled(fake_rollout(["a", "b"], [[0, 1], [1, 0]]))
    out, stats = refill(first, never, group_size=G, want=2, max_draws=3, pad=0)
    assert [r.solution for r in out.rollout.records] == ["a", "b"]
    assert stats == SamplingStats(draws=1, dropped=0)


def test_grpo_metrics_from_the_step_hand_offs():
    cfg = load_config("demo", ["rollout.num_generations=2"])
    ro = fake_rollout(["a", "b"], [[1, 2], [1, 1]])
    m = grpo_metrics(cfg, 7, ro, LossStats(loss=0.5, kl=0.01, clip_fraction=0.0, entropy=1.5), grad_norm=2.0,
                     lr=1e-4, times={"rollout": 2.0, "reference": 0.0, "policy": 1.0, "optimizer": 0.1},
                     skipped_images=1, skipped_update=False, sampling=SamplingStats(2, 1), peak_memory_gb=0.5)
    # totals [1, 2, 1, 1]: mean 1.25; accuracy = total - 1 → [0, 1, 0, 0], mean 0.25 (classify reports accuracy)
    assert m["reward"] == 1.25 and m["accuracy"] == 0.25 and m["format_rate"] == 1.0
    assert m["zero_signal_fraction"] == 0.5  # group b ties
    assert m["completion_length"] == 2.0 and m["rollout_tokens_per_s"] == 4.0  # 8 tokens / 2 s
    assert (m["step"], m["kl"], m["sampling_draws"], m["dropped_groups"], m["skipped_images"]) == (7, 0.01, 2, 1, 1)
    # the four completions name four different "answers": no answer collapse
    assert m["top_answer_fraction"] == 0.5


def test_the_state_counts_non_finite_steps_in_a_row():
    state = TrainState()
    for applied in (False, False, True, False):
        state = state.after_update(applied)
    assert (state.step, state.nonfinite_in_row, state.nonfinite_total) == (4, 1, 3)
    restored = TrainState.from_checkpoint(state.to_checkpoint())
    assert (restored.step, restored.nonfinite_total, restored.nonfinite_in_row) == (4, 3, 0)
    with pytest.raises(AttributeError):
        state.step = 0  # frozen: a step returns a new state
