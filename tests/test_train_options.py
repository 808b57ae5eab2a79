"""The GRPO variants and run-health tools, each through a real run on the tiny model.

Hand-derived tests of the losses and rules live in test_grpo.py and test_alerts.py; here
each option is switched on in the loop and must train, log and leave its files.
"""

from __future__ import annotations

import json

import pytest
from helpers import invoke
from test_train import reachable_reward, read_metrics, tiny_overrides  # noqa: F401 (fixture)

from visualrft_lite.config import load_config
from visualrft_lite.train import train


@pytest.fixture
def cfg_for(tiny_model_dir, shapes_root):
    def make(**extra):
        return load_config("demo", tiny_overrides(tiny_model_dir, shapes_root, **extra))
    return make


def test_dapo_options_and_tensorboard(cfg_for, tmp_path, reachable_reward):
    pytest.importorskip("tensorboard")
    cfg = cfg_for(**{"train.steps": 2, "grpo.dynamic_sampling": True, "grpo.max_sampling_draws": 3,
                     "grpo.mask_truncated": True, "grpo.reward_aggregation": "normalize_then_sum",
                     "grpo.epsilon_high": 0.28, "train.report_to": "tensorboard"})
    run = train(cfg, out=tmp_path / "r", quiet=True)
    lines = read_metrics(run)
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:  # dynamic sampling's counts are checked on a tied group below
        assert m["entropy"] > 0  # from the policy pass's own logits
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))


def test_gspo_with_several_updates_per_rollout(cfg_for, tmp_path, reachable_reward, monkeypatch):
    # two updates per rollout: the first sees ratio 1 (the policy is the one that sampled), the
    # second a policy one update away, so its sequence-level ratio differs from 1
    from test_train import session

    from visualrft_lite import train as train_mod

    ratios: list[tuple[str, float]] = []
    real = train_mod.grpo.grpo_loss

    def recorded(*a, **k):
        loss, st = real(*a, **k)
        ratios.append((k["importance_sampling"], st["ratio_mean"]))
        return loss, st

    monkeypatch.setattr(train_mod.grpo, "grpo_loss", recorded)
    t = session(cfg_for(**{"grpo.importance_sampling": "sequence", "grpo.num_iterations": 2,
                           "train.micro_batch_size": 8}), tmp_path)
    m = train_mod.grpo_step(t)
    assert t.updater.updates == 2 and m["skipped_update"] is False and m["grad_norm"] > 0
    assert [kind for kind, _ in ratios] == ["sequence", "sequence"]  # one micro-batch, two iterations
    assert ratios[0][1] == pytest.approx(1.0, abs=1e-6) and abs(ratios[1][1] - 1.0) > 1e-4, ratios


def first_step(cfg_for, tmp_path, name, **extra):
    from test_train import session

    from visualrft_lite import train as train_mod

    (tmp_path / name).mkdir()
    return train_mod.grpo_step(session(cfg_for(**extra), tmp_path / name))


def test_mask_truncated_changes_the_loss_the_loop_computes(cfg_for, tmp_path, reachable_reward):
    # same seed, same rollout: with overlong filtering, completions cut off at 8 tokens add no loss
    plain = first_step(cfg_for, tmp_path, "a")
    masked = first_step(cfg_for, tmp_path, "b", **{"grpo.mask_truncated": True})
    assert masked["reward"] == plain["reward"] and masked["loss"] != plain["loss"]
    if masked["completion_length"] == 8:  # every completion hit the limit: nothing is left to learn from
        assert masked["loss"] == 0.0 and masked["grad_norm"] == 0.0


@pytest.fixture
def two_component_reward(monkeypatch, tiny_model_dir):
    """Two components that vary on their own (a parity share and a low-id share), so their sum and
    their group-normalised sum give different advantages."""
    from helpers import patch_rollout_reward
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    def reward(completion):
        ids = tok(completion, add_special_tokens=False)["input_ids"] or [0]
        even = sum(i % 2 == 0 for i in ids) / len(ids)
        low = sum(i < len(tok) // 4 for i in ids) / len(ids)
        return {"format": even, "accuracy": low, "total": even + low}

    patch_rollout_reward(monkeypatch, reward)


def test_normalize_then_sum_changes_the_loss_the_loop_computes(cfg_for, tmp_path, two_component_reward):
    plain = first_step(cfg_for, tmp_path, "a")
    normalised = first_step(cfg_for, tmp_path, "b", **{"grpo.reward_aggregation": "normalize_then_sum"})
    assert normalised["reward"] == plain["reward"] and normalised["loss"] != plain["loss"]


def test_dynamic_sampling_replaces_a_tied_group(cfg_for, tmp_path, monkeypatch):
    # Every image but the stars' scores the same for all its completions (a tied group); with
    # dynamic sampling the loop drops those groups and draws more prompts in their place.
    from visualrft_lite import rollout

    real = rollout.score_groups

    def scored(records, completions, resized_sizes, cfg):
        _, answers, truths = real(records, completions, resized_sizes, cfg)
        rewards = []
        for text, p in zip(completions.texts, completions.prompt_index):
            value = (len(text) % 3) / 2 if records[p].solution["label"] == "star" else 1.0
            rewards.append({"format": 0.0, "accuracy": value, "total": value})
        return tuple(rewards), answers, truths

    monkeypatch.setattr(rollout, "score_groups", scored)
    plain = first_step(cfg_for, tmp_path, "a")
    assert plain["sampling_draws"] == 1 and plain["dropped_groups"] == 0  # off: nothing dropped
    m = first_step(cfg_for, tmp_path, "b", **{"grpo.dynamic_sampling": True, "grpo.max_sampling_draws": 4})
    assert m["dropped_groups"] > 0 and m["sampling_draws"] > 1
    assert m["zero_signal_fraction"] < 1.0 or m["sampling_draws"] == 4  # kept groups carry signal unless draws ran out


def test_tied_groups_warn_and_are_written_to_alerts(tmp_path, tiny_model_dir, shapes_root):
    # A random model never writes the answer format: every group scores 0 everywhere, so every
    # group ties; after 3 steps in a row the run warns once and names the knob.
    args = tiny_overrides(tiny_model_dir, shapes_root, **{"train.steps": 4, "train.samples_every": 2})
    result = invoke("train", "--preset", "demo", "--out", tmp_path / "r", *[x for a in args for x in ("--set", a)])
    assert result.exit_code == 0, result.output[-2000:]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    alerts = [json.loads(line) for line in (tmp_path / "r" / "alerts.jsonl").read_text().splitlines()]
    assert any(a["rule"] == "zero_signal" for a in alerts), alerts
    assert len(warnings) == len(alerts)  # once per episode, not every step
    # the completions of the run drawn on their images
    drawn = invoke("samples", tmp_path / "r", "--out", tmp_path / "pngs")
    assert drawn.exit_code == 0, drawn.output
    assert list((tmp_path / "pngs").glob("*.png"))
