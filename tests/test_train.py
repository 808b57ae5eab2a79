"""The GRPO loop on the tiny local model (CPU, fixed seeds).

LoRA moves and the base does not; the reference is the policy at step 0; the 4-bit path
runs; the reward rises on a reward the tiny model can reach by chance; resume is exact;
checkpoints are atomic; interrupts and non-finite losses stop cleanly; two processes run,
and a non-finite loss on one of them is skipped by both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import patch_rollout_reward

from visualrft_lite import checkpoint as ckpt
from visualrft_lite import train as train_mod
from visualrft_lite.config import load_config
from visualrft_lite.errors import StopRequested, UserError
from visualrft_lite.logprobs import all_logprobs
from visualrft_lite.modeling import ops
from visualrft_lite.decoder import completion_mask, filter_logits
from visualrft_lite.modeling.load import resolve_model
from visualrft_lite.rundir import RunDir
from visualrft_lite.train import Plan, Trainer, TrainingStopped, grpo_step, sample, train

ROOT = Path(__file__).resolve().parent.parent


def tiny_overrides(tiny_model_dir: Path, shapes_root: Path, **extra: object) -> list[str]:
    base = {
        "model.name": str(tiny_model_dir), "model.quant": "none", "model.device": "cpu",
        "model.gradient_checkpointing": False,
        "model.min_pixels": 3136, "model.max_pixels": 12544,  # 16 image tokens: fast (the demo upscales)
        "data.source": "synthetic", "data.path": str(shapes_root), "data.task": "classify",
        "rollout.num_generations": 4, "rollout.max_completion_length": 8,
        "train.steps": 2, "train.prompts_per_step": 2, "train.micro_batch_size": 3,
        "train.sft_warmup": 0, "train.save_every": 0, "train.samples_every": 1, "lora.r": 4, "lora.alpha": 8,
        "lora.dropout": 0.0, "train.learning_rate": 1e-2, "eval.heldout": 0,
    }
    base.update({k: v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def cfg_for(tiny_model_dir, shapes_root):
    def make(**extra):
        return load_config("demo", tiny_overrides(tiny_model_dir, shapes_root, **extra))
    return make


@pytest.fixture
def reachable_reward(monkeypatch, tiny_model_dir):
    """A reward a random model reaches by chance: the share of the completion's tokens in the
    lower half of the vocabulary (the real rewards need <answer> tags a random model never writes,
    so every advantage would be 0 and nothing would move)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    half = len(tok) // 2

    def reward(completion):
        ids = tok(completion, add_special_tokens=False)["input_ids"] or [half]
        low = sum(i < half for i in ids) / len(ids)
        return {"format": 0.0, "accuracy": low, "total": low}

    patch_rollout_reward(monkeypatch, reward)
    return reward


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def session(cfg, run_dir) -> Trainer:
    cfg = resolve_model(cfg)
    return Trainer(cfg, run_dir, Plan.for_train(cfg))


def test_one_step_moves_lora_and_leaves_base_frozen(cfg_for, tmp_path, reachable_reward):
    s = session(cfg_for(), tmp_path)
    before = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    grpo_step(s)
    after = dict(s.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and base
    assert any(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n)
    assert all(torch.equal(before[n], after[n]) for n in base)
    assert not any(after[n].requires_grad for n in base)


def test_reference_equals_policy_at_step_zero(cfg_for, tmp_path):
    # LoRA B starts at zero, so adapters-disabled log-probs equal the policy's and KL is 0
    s = session(cfg_for(), tmp_path)
    ro = sample(s, s.records_for_step(2)).rollout
    with ops.reference_mode(s.model):
        ref = all_logprobs(s.model, ro.batch, ro.features, ro.completions, 3, 1.0)
    policy = all_logprobs(s.model, ro.batch, ro.features, ro.completions, 3, 1.0)
    torch.testing.assert_close(ref, policy, atol=1e-6, rtol=0)
    assert (ref != 0).any()  # real log-probs, not an empty tensor
    m = grpo_step(s)
    assert m["kl"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("quant", ["none", "4bit"])
def test_the_reference_is_the_base_model_once_lora_has_moved(cfg_for, tmp_path, reachable_reward, quant):
    # After a step that moves LoRA B, the adapters-disabled pass must be the plain base model's
    # (its own weights, loaded on their own) and differ from the policy's; KL is then > 0.
    if quant == "4bit":
        pytest.importorskip("bitsandbytes")
    from visualrft_lite.modeling import load as mload

    s = session(cfg_for(**{"model.quant": quant, "grpo.beta": 0.1}), tmp_path)
    grpo_step(s)
    assert any(bool(p.abs().sum() > 0) for n, p in s.model.named_parameters() if "lora_B" in n)
    ro = sample(s, s.records_for_step(2)).rollout
    with ops.reference_mode(s.model):
        ref = all_logprobs(s.model, ro.batch, ro.features, ro.completions, 3, 1.0)
    policy = all_logprobs(s.model, ro.batch, ro.features, ro.completions, 3, 1.0)
    base = mload.load_base(s.model_cfg).model.eval()  # a second copy, for this check only
    plain = all_logprobs(base, ro.batch, ro.features, ro.completions, 3, 1.0)  # vision tower has no adapter
    torch.testing.assert_close(ref, plain, atol=1e-5, rtol=0)
    assert float((ref - policy).abs().max()) > 1e-3  # the adapter changed the policy, not the reference
    m = grpo_step(s)
    assert m["kl"] > 1e-6


def test_sampling_ignores_near_greedy_generation_config(cfg_for, tmp_path, tiny_model_dir):
    # the tiny model's generation_config.json is near-greedy on purpose (like Qwen2-VL's);
    # explicit temperature 1.0 must give a diverse group, and no vision token is ever sampled
    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert gen.get("top_k") == 1
    s = session(cfg_for(**{"rollout.num_generations": 8}), tmp_path)
    ro = sample(s, s.records[:1]).rollout
    ids = ro.completions.ids
    assert len({tuple(row.tolist()) for row in ids}) > 1
    suppress = ops.special_tokens(s.processor).never_sampled
    assert not torch.isin(ids, torch.tensor(suppress)).any()


def test_completion_mask_includes_first_eos():
    eos = torch.tensor([9])
    tokens = torch.tensor([[1, 2, 9, 0, 0], [1, 9, 9, 0, 0], [1, 2, 3, 4, 5]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(completion_mask(tokens, eos), expected)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    # top-k 2 keeps the two largest
    assert torch.isinf(filter_logits(logits, top_k=2, top_p=1.0)).tolist() == [[False, False, True, True]]
    # top-p 0.8: 0.5 + 0.3 reaches 0.8, so the third token is dropped
    assert torch.isinf(filter_logits(logits, top_k=0, top_p=0.8)).tolist() == [[False, False, True, True]]
    # top-p 0.81 needs the third token too
    assert torch.isinf(filter_logits(logits, top_k=0, top_p=0.81)).tolist() == [[False, False, False, True]]


def test_four_bit_path_runs_on_cpu(cfg_for, tmp_path, reachable_reward):
    pytest.importorskip("bitsandbytes")
    s = session(cfg_for(**{"model.quant": "4bit"}), tmp_path)
    kinds = {type(m).__name__ for m in s.model.modules()}
    assert "Linear4bit" in kinds
    # rollout (eval mode) then a training step: the CPU repack must not break backward
    m1 = grpo_step(s)
    m2 = grpo_step(s)
    assert all(torch.isfinite(torch.tensor([m["loss"], m["kl"]])).all() for m in (m1, m2))
    assert m1["grad_norm"] > 0 and m2["grad_norm"] > 0  # gradients flowed through the NF4 layers
    assert any(p.grad is None for p in s.updater.params)  # zeroed after the step


def test_reward_rises_on_a_reachable_reward(cfg_for, tmp_path, reachable_reward):
    # GRPO should push the reachable reward up within a few dozen seeded steps.
    cfg = cfg_for(**{"train.steps": 40, "rollout.num_generations": 8, "rollout.max_completion_length": 6,
                     "train.prompts_per_step": 2, "train.micro_batch_size": 8, "train.learning_rate": 5e-2,
                     "lora.r": 16, "lora.alpha": 32, "grpo.beta": 0.0})
    s = session(cfg, tmp_path)
    rewards = [grpo_step(s)["reward"] for _ in range(cfg.train.steps)]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last > first + 0.15, rewards


def test_resume_gives_the_same_metrics(cfg_for, tmp_path, reachable_reward):
    # 4 steps straight vs 2 steps, stop, resume to 4: steps 3-4 (the resumed ones) log exactly
    # the same numbers and the final adapters are the same tensors
    from safetensors.torch import load_file

    keys = ("reward", "loss", "kl", "grad_norm", "completion_length", "entropy", "lr")
    straight = train(cfg_for(**{"train.steps": 4, "grpo.beta": 0.1}), out=tmp_path / "a", quiet=True)
    first = train(cfg_for(**{"train.steps": 2, "grpo.beta": 0.1}), out=tmp_path / "b", quiet=True)
    cfg = RunDir(first).resume_config(["train.steps=4"])
    train(cfg, resume=first, quiet=True)
    a, b = read_metrics(straight), read_metrics(first)
    assert [m["step"] for m in a] == [m["step"] for m in b] == [1, 2, 3, 4]
    for ma, mb in zip(a[2:], b[2:]):
        assert {k: ma[k] for k in keys} == {k: mb[k] for k in keys}, ma["step"]
    assert a[2]["kl"] > 0  # the resumed steps see a moved adapter: a real reference to compare against
    wa, wb = (load_file(str(run / "final" / "adapter_model.safetensors")) for run in (straight, first))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_kill_while_saving_keeps_previous_checkpoint(cfg_for, tmp_path, monkeypatch):
    run = train(cfg_for(**{"train.steps": 1}), out=tmp_path / "r", quiet=True)
    good = ckpt.latest_checkpoint(run)
    cfg = load_config(str(run / "config.yaml"))
    s = Trainer(cfg, run, Plan.for_train(cfg), resume=True)
    grpo_step(s)

    def killed(*a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(ckpt.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        s.save()
    assert ckpt.latest_checkpoint(run) == good  # the half-written one is not taken
    assert (run / "checkpoints" / ".tmp-step-000002").exists()
    monkeypatch.undo()
    resumed = Trainer(cfg, run, Plan.for_train(cfg), resume=True)
    assert resumed.step == 1


def test_interrupt_saves_and_says_how_to_resume(cfg_for, tmp_path, reachable_reward, monkeypatch):
    import signal

    cfg = cfg_for(**{"train.steps": 5})
    real = train_mod.grpo_step

    def step_then_ctrl_c(s):
        m = real(s)
        os.kill(os.getpid(), signal.SIGINT)  # the handler only records the request
        return m

    monkeypatch.setattr(train_mod, "grpo_step", step_then_ctrl_c)
    with pytest.raises(StopRequested) as e:
        train(cfg, out=tmp_path / "r", quiet=True)
    assert "resume with: vrft-lite train --resume" in str(e.value)
    assert ckpt.latest_checkpoint(tmp_path / "r").name == "step-000001"


def test_non_finite_losses_stop_the_run(cfg_for, tmp_path, reachable_reward, monkeypatch):
    cfg = cfg_for(**{"train.steps": 10, "train.max_nonfinite": 2})
    real = train_mod.grpo.grpo_loss

    def nan_loss(*a, **k):
        loss, st = real(*a, **k)
        return loss * float("nan"), st

    monkeypatch.setattr(train_mod.grpo, "grpo_loss", nan_loss)
    with pytest.raises(TrainingStopped, match="2 non-finite losses in a row"):
        train(cfg, out=tmp_path / "r", quiet=True)
    lines = read_metrics(tmp_path / "r")
    assert [m["skipped_update"] for m in lines] == [True, True]


def test_run_directory_contents(cfg_for, tmp_path):
    run = train(cfg_for(**{"train.steps": 2, "train.save_every": 1}), out=tmp_path / "r", quiet=True)
    assert (run / "config.yaml").is_file() and (run / "samples.jsonl").is_file()
    m = read_metrics(run)[-1]
    for key in ("reward", "reward_std", "accuracy", "format_rate", "kl", "loss", "grad_norm", "lr",
                "completion_length", "zero_signal_fraction", "time/rollout", "time/reference", "time/policy",
                "time/optimizer", "rollout_tokens_per_s", "peak_memory_gb"):
        assert key in m, key
    assert (run / "final" / "adapter_config.json").is_file()
    assert (run / "final" / "adapter_model.safetensors").is_file()
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000001", "step-000002"]
    sample = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    for key in ("step", "group", "task", "image", "image_size", "resized_size", "solution", "completion", "reward"):
        assert key in sample, key
    with pytest.raises(UserError, match="holds an earlier run .* resume it with --resume"):
        train(cfg_for(), out=run, quiet=True)  # never overwrite without --force


def test_sft_warmup_then_grpo(cfg_for, tmp_path):
    run = train(cfg_for(**{"train.sft_warmup": 2, "train.steps": 1}), out=tmp_path / "r", quiet=True)
    phases = [m["phase"] for m in read_metrics(run)]
    assert phases == ["sft", "sft", "grpo"]
    assert (run / "sft_model" / "config.json").is_file()  # the warmed-up model is GRPO's base
    base = json.loads((run / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).is_absolute() and Path(base) == (run / "sft_model").resolve()  # usable from anywhere


def test_heldout_row_equals_vrft_lite_eval_of_the_final_adapter(cfg_for, tmp_path, reachable_reward):
    # One evaluator: the end-of-run held-out row is exactly what `vrft-lite eval --limit N` reports.
    from visualrft_lite.evaluate import run_eval

    run = train(cfg_for(**{"train.steps": 2, "eval.heldout": 6, "eval.max_new_tokens": 12}),
                out=tmp_path / "r", quiet=True)
    row = [json.loads(line) for line in (run / "heldout.jsonl").read_text().splitlines()][-1]
    assert row["stage"] == "grpo"
    evaluation, _ = run_eval(adapter=run / "final", limit=6, out=tmp_path / "eval", quiet=True)
    m = evaluation.metrics
    assert (row["n"], row["metric"]) == (m["n"], m["headline"])
    assert (row["format_rate"], row["accuracy"], row["reward"]) == (m["format_rate"], m[m["headline"]], m["mean_reward"])
    answers = [json.loads(line) for line in (run / "heldout_answers.jsonl").read_text().splitlines()]
    final = [a["completion"] for a in answers if a["stage"] == "grpo"]
    assert final == [r["completion"] for r in evaluation.rows]
    from safetensors.torch import load_file

    trained = load_file(str(run / "final" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)  # eval ran a trained adapter


def test_every_verb_prints_its_end(cfg_for, tmp_path, capsys):
    # the printed end of a run: SFT only, zero GRPO steps, and a normal run (not quiet)
    from visualrft_lite.train import sft

    sft(cfg_for(**{"train.steps": 1}), out=tmp_path / "s")
    assert "last supervised loss" in capsys.readouterr().out
    train(cfg_for(**{"train.steps": 0, "eval.heldout": 0}), out=tmp_path / "z")
    assert "nothing to do: the run is already at step 0" in capsys.readouterr().out
    train(cfg_for(**{"train.steps": 1}), out=tmp_path / "g")
    assert "last step's sampled groups" in capsys.readouterr().out


NAN_ON_RANK_1 = """
import os, sys
from visualrft_lite import sft as t_sft
from visualrft_lite import train as t

rank = int(os.environ.get("RANK", "0"))
real_logprobs, real_loss = t_sft.completion_logprobs, t.grpo.grpo_loss
calls = {"sft": 0, "grpo": 0}

def sft_logprobs(*a, **k):  # the first supervised forward on rank 1 only gives NaN
    out = real_logprobs(*a, **k)
    calls["sft"] += 1
    return out * float("nan") if rank == 1 and calls["sft"] == 1 and a[-1] == 1.0 else out

def grpo_loss(*a, **k):  # the first GRPO loss on rank 1 only is NaN
    loss, st = real_loss(*a, **k)
    calls["grpo"] += 1
    return (loss * float("nan") if rank == 1 and calls["grpo"] == 1 else loss), st

t_sft.completion_logprobs, t.grpo.grpo_loss = sft_logprobs, grpo_loss
sys.path.insert(0, sys.argv.pop(1))
import cli
cli.main()
"""


@pytest.mark.slow
def test_two_processes_agree_to_skip_a_non_finite_step(tiny_model_dir, shapes_root, tmp_path):
    # A NaN on one process only (first SFT step, first GRPO step): both skip that update and
    # the run finishes, instead of one process waiting forever in the gradient all-reduce.
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    args = tiny_overrides(tiny_model_dir, shapes_root, **{"train.steps": 2, "train.sft_warmup": 2,
                                                            "train.sft_batch_size": 2})
    # torchrun starts the 2 processes (accelerate's CPU launcher needs MPI); accelerate inside
    # the loop reads the same environment as under `accelerate launch` on GPUs.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(ROOT), "train", "--preset", "demo", "--out", str(tmp_path / "r")]
    for a in args:
        cmd += ["--set", a]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = read_metrics(tmp_path / "r")
    assert [m["step"] for m in lines] == [1, 2, 3, 4]  # one line per step from the main process only
    assert [m["phase"] for m in lines] == ["sft", "sft", "grpo", "grpo"]
    # main (rank 0) had finite losses, yet skipped exactly the steps rank 1 could not take
    assert [m["skipped_update"] for m in lines] == [True, False, True, False]
    assert (tmp_path / "r" / "final" / "adapter_model.safetensors").is_file()


def test_ctrl_c_from_the_command_line_exits_130_with_the_resume_command(tiny_model_dir, shapes_root, tmp_path,
                                                                        reachable_reward, monkeypatch):
    import signal

    from helpers import invoke

    real = train_mod.grpo_step

    def step_then_ctrl_c(s):
        m = real(s)
        os.kill(os.getpid(), signal.SIGINT)
        return m

    monkeypatch.setattr(train_mod, "grpo_step", step_then_ctrl_c)
    args = tiny_overrides(tiny_model_dir, shapes_root, **{"train.steps": 3})
    result = invoke("train", "--preset", "demo", "--out", tmp_path / "r", *[x for a in args for x in ("--set", a)])
    assert result.exit_code == 130, result.output[-2000:]
    assert "Error:" not in result.stderr and "Traceback" not in result.output
    assert "resume with: vrft-lite train --resume" in result.stderr
    assert "nothing is saved yet, so all steps would be lost" in result.stdout  # what a second Ctrl-C would cost


def test_resume_recovers_a_damaged_run_directory(cfg_for, tmp_path, reachable_reward, capsys):
    # A crash mid-save left the newest checkpoint's adapter truncated and a half-written log
    # line: resume takes the last intact checkpoint, drops the torn line and says so.
    run = train(cfg_for(**{"train.steps": 2, "train.save_every": 1}), out=tmp_path / "r", quiet=True)
    adapter = run / "checkpoints" / "step-000002" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "reward": 0.')
    capsys.readouterr()
    train(RunDir(run).resume_config(["train.steps=3"]), resume=run)
    out = capsys.readouterr().out
    assert "step-000002" in out  # named as skipped
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3]  # step 2 redone from step 1, torn line gone



def test_train_force_on_a_users_folder_deletes_nothing(tiny_model_dir, shapes_root, tmp_path, monkeypatch):
    # the reported case: `train --out . --force` in a folder of the user's own files
    from helpers import assert_one_line_error, invoke

    (tmp_path / "notes.txt").write_text("precious")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)")
    monkeypatch.chdir(tmp_path)
    args = tiny_overrides(tiny_model_dir, shapes_root, **{"train.steps": 1})
    result = invoke("train", "--preset", "demo", "--out", ".", "--force", *[x for a in args for x in ("--set", a)])
    assert_one_line_error(result, "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "precious" and (tmp_path / "src" / "main.py").is_file()
    assert not (tmp_path / "config.yaml").exists()
