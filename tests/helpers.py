"""Helpers the CLI tests share (tests/ is on sys.path under pytest)."""

from __future__ import annotations


def invoke(*args, input_text: str | None = None):
    """Run the vrft-lite command in-process (with `input_text` on stdin); returns click's Result."""
    from click.testing import CliRunner

    import cli

    return CliRunner().invoke(cli.main, [str(a) for a in args], input=input_text)


def assert_one_line_error(result, *needles: str) -> None:
    """A user's mistake: exit 1, one 'Error:' line naming the needles, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def cached_decode_logits(model, batch, features, completion, per_prompt: int):
    """Teacher-forced logits [N, T, V] through the decoder's path: one prefill of the batch,
    its cache repeated per_prompt times, then one cached decode step per completion token
    (rows per_prompt*p ... answer prompt p)."""
    import torch

    from visualrft_lite.modeling import ops

    first, cache = ops.prefill(model, batch, features)  # [P, V]
    ops.repeat_cache(cache, per_prompt)
    mask = batch.attention_mask.repeat_interleave(per_prompt, 0)
    start = batch.next_position.repeat_interleave(per_prompt)
    steps = [first.repeat_interleave(per_prompt, 0)]
    for t in range(completion.shape[1] - 1):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        steps.append(ops.decode_step(model, completion[:, t: t + 1], ops.text_positions(start + t, 1), mask, cache))
    return torch.stack(steps, 1)



def patch_rollout_reward(monkeypatch, reward) -> None:
    """Training scores completions with `reward(text) -> {"format", "accuracy", "total"}` instead of
    the task's reward (the answers and truths are still the task's own readings)."""
    from visualrft_lite import rollout

    real = rollout.score_groups

    def scored(records, completions, resized_sizes, cfg):
        _, answers, truths = real(records, completions, resized_sizes, cfg)
        return tuple(reward(text) for text in completions.texts), answers, truths

    monkeypatch.setattr(rollout, "score_groups", scored)
