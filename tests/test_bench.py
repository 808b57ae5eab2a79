"""The GRPO-step benchmark harness: its pure pieces, and one tiny end-to-end run (slow).

No test here asserts on a timing: the numbers a benchmark prints are for reading, not checking.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from grpo_report import (  # noqa: E402
    COLUMNS,
    Result,
    bound_fraction,
    bound_steps_per_s,
    device_slug,
    fmt_fraction,
    fmt_seconds,
    gpu_bandwidth,
    image_setting,
    markdown_table,
    notes,
    results_path,
)


# ----------------------------------------------------------------------------- bandwidth bound


def test_bound_arithmetic_by_hand():
    # 1.5e9 parameters at 0.5 bytes (NF4) = 0.75e9 bytes read per decode step. At 3.35e12 B/s a
    # step takes 0.75e9 / 3.35e12 = 0.2239 ms, so the bound is 1 / 0.2239 ms = 4466.7 steps/s,
    # and 100 measured steps/s is 100 / 4466.7 = 0.02239 of it.
    weight_bytes = 1.5e9 * 0.5
    assert weight_bytes == 0.75e9
    assert 1 / bound_steps_per_s(weight_bytes, 3.35e12) == pytest.approx(0.2239e-3, rel=1e-3)
    assert bound_steps_per_s(weight_bytes, 3.35e12) == pytest.approx(4466.7, rel=1e-4)
    assert bound_fraction(100, weight_bytes, 3.35e12) == pytest.approx(0.02239, rel=1e-3)


def test_result_decode_fraction_uses_steps_not_tokens():
    # G = 8 completions of 100 tokens sampled in 1 s: 800 tokens/s, but one decode step makes G
    # tokens, so 100 decode steps/s: the same 0.0224 of the H100 bound as above.
    r = Result(system="vrft-lite", model="2b", G=8, micro_batch=4, image="448", device="NVIDIA H100 80GB HBM3",
               rollout_s=[1.0], completion_tokens=[800], decode_weight_bytes=0.75e9, bandwidth=3.35e12)
    assert r.rollout_tokens_per_s() == pytest.approx(800)
    assert r.decode_fraction() == pytest.approx(0.02239, rel=1e-3)
    assert fmt_fraction(r.decode_fraction()) == "2.2%"


def test_decode_fraction_counts_every_row_decoded_together():
    # P = 2 prompts × G = 4 decoded as one batch of 8 rows: 800 tokens/s is 100 decode steps/s,
    # the same 0.0224 of the H100 bound as above. Chunked to one prompt per round (decode_rows = 4)
    # the same tokens/s would be 200 steps/s: twice the fraction.
    r = Result(system="vrft-lite", model="2b", prompts=2, G=4, micro_batch=4, image="448",
               rollout_s=[1.0], completion_tokens=[800], decode_weight_bytes=0.75e9, bandwidth=3.35e12)
    assert r.decode_fraction() == pytest.approx(0.02239, rel=1e-3)
    r.decode_rows = 4
    assert r.decode_fraction() == pytest.approx(2 * 0.02239, rel=1e-3)


def test_batched_speedup_is_per_prompt_over_batched():
    # per-prompt rollouts of 0.9 and 1.1 s (mean 1.0) against batched 0.2 and 0.3 (mean 0.25): 4×
    r = Result(system="vrft-lite", model="tiny", prompts=4, G=8, micro_batch=4, image="112",
               rollout_s=[0.2, 0.3], per_prompt_rollout_s=[0.9, 1.1])
    assert r.batched_speedup() == pytest.approx(4.0)
    trl = Result(system="trl", model="tiny", G=8, micro_batch=4, image="112", rollout_s=[1.0])
    assert trl.batched_speedup() is None  # not measured for TRL


def test_summary_holds_the_table_as_numbers():
    r = Result(system="vrft-lite", model="tiny", prompts=2, G=4, micro_batch=4, image="56", memory_kind="rss",
               peak_allocated_gb=1.0, step_s=[1.0, 3.0], rollout_s=[0.5, 0.7], reference_s=[0.1, 0.1],
               policy_s=[0.3, 0.5], optimizer_s=[0.01, 0.03], completion_tokens=[64, 64],
               per_prompt_rollout_s=[1.2, 1.2])
    d = r.summary()
    json.dumps(d)  # JSON-ready as it stands
    assert (d["system"], d["model"], d["prompts"], d["G"], d["steps"]) == ("vrft-lite", "tiny", 2, 4, 2)
    assert d["s_per_step"] == pytest.approx(2.0) and d["rollout_s"] == pytest.approx(0.6)
    assert d["policy_s"] == pytest.approx(0.4) and d["optimizer_s"] == pytest.approx(0.02)
    assert d["batched_speedup"] == pytest.approx(2.0)  # 1.2 / 0.6
    assert d["completion_tokens"] == 64 and d["decode_bound_fraction"] is None
    skipped = Result(system="trl", model="tiny", G=4, micro_batch=4, image="56", status="skipped").summary()
    assert skipped["s_per_step"] is None and skipped["steps"] == 0 and skipped["prompts"] == 1


def test_token_note_flags_rows_that_sampled_other_lengths():
    # 2 prompts × 4 completions × 16 tokens = 128 a step; 1 × 8 × 16 = 128 too: same length per completion
    a = Result(system="vrft-lite", model="tiny", prompts=2, G=4, micro_batch=4, image="56", completion_tokens=[128])
    b = Result(system="trl", model="tiny", prompts=1, G=8, micro_batch=4, image="56", completion_tokens=[128])
    assert "every row sampled 16 tokens per completion" in notes([a, b])
    c = Result(system="trl", model="tiny", prompts=2, G=4, micro_batch=4, image="56", completion_tokens=[120])
    lines = notes([a, c])
    assert not any(line.startswith("every row") for line in lines)
    assert any("P 2, G 4: 15 tokens per completion" in line for line in lines)


def test_bound_rejects_zero_bytes():
    with pytest.raises(ValueError):
        bound_steps_per_s(0, 3.35e12)


@pytest.mark.parametrize("name,bandwidth", [
    ("NVIDIA H100 80GB HBM3", 3.35e12),  # the SXM card's name: no "SXM" in it
    ("NVIDIA H100 PCIe", 2.0e12),  # must not fall through to the SXM figure
    ("NVIDIA H200", 4.8e12),
    ("NVIDIA A100-SXM4-80GB", 2.0e12),
    ("NVIDIA A100 80GB PCIe", 2.0e12),
    ("NVIDIA GeForce RTX 4090", 1.0e12),
    ("NVIDIA A100-SXM4-40GB", None),  # 1.56 TB/s: not in the table, so unknown rather than wrong
    ("NVIDIA L4", None),
])
def test_gpu_bandwidth_table(name, bandwidth):
    assert gpu_bandwidth(name) == bandwidth


# ----------------------------------------------------------------------------- settings and names


@pytest.mark.parametrize("image,expected", [
    ("448", (448, 448 * 448)),  # kept at 448x448: 16x16 merged patches
    ("56", (56, 3136)),  # the smallest Qwen2-VL image (4 image tokens)
    ("max", (1024, 401408)),  # resized under the paper's max_pixels
])
def test_image_setting(image, expected):
    assert image_setting(image) == expected


@pytest.mark.parametrize("image", ["450", "28", "big", "-448"])
def test_image_setting_rejects(image):
    # not a multiple of 28, below the minimum, or not a number: the processor would silently resize
    with pytest.raises(ValueError, match="multiple of 28"):
        image_setting(image)


def test_results_path_names_device_and_date(tmp_path):
    assert device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert results_path(tmp_path, "cpu", "2026-11-21") == tmp_path / "cpu-2026-11-21.md"


# ----------------------------------------------------------------------------- the table


def test_fmt_seconds_keeps_three_significant_digits():
    assert [fmt_seconds([x]) for x in (0.01234, 1.234, 12.34)] == ["0.012", "1.23", "12.3"]
    assert fmt_seconds([]) == "–"


def test_markdown_table_rows():
    ok = Result(system="vrft-lite", model="2b", G=8, micro_batch=4, image="448", device="NVIDIA H100 80GB HBM3",
                peak_allocated_gb=5.5, peak_reserved_gb=6.25, after_load_gb=2.0, step_s=[10.0, 12.0],
                rollout_s=[6.0, 6.0], reference_s=[1.0, 1.0], policy_s=[3.0, 3.0], optimizer_s=[0.1, 0.1],
                completion_tokens=[2048, 2048], decode_weight_bytes=1.5e9, bandwidth=3.35e12)
    oom = Result(system="original", model="7b", G=8, micro_batch=4, image="448", status="failed",
                 note="out of GPU memory")
    cpu = Result(system="trl", model="tiny", G=4, micro_batch=4, image="112", memory_kind="rss",
                 peak_allocated_gb=1.0, after_load_gb=0.9, step_s=[1.0], rollout_s=[0.5], reference_s=[0.1],
                 policy_s=[0.3], optimizer_s=[0.1], completion_tokens=[128])
    unknown_gpu = Result(system="vrft-lite", model="2b", G=4, micro_batch=4, image="448", device="NVIDIA L4",
                         step_s=[1.0], rollout_s=[1.0], completion_tokens=[4], decode_weight_bytes=1e9)
    per_prompt = Result(system="vrft-lite", model="tiny", prompts=4, G=8, micro_batch=4, image="112",
                        memory_kind="rss", step_s=[1.0], rollout_s=[0.25], per_prompt_rollout_s=[0.75],
                        completion_tokens=[512])
    lines = markdown_table([ok, oom, cpu, unknown_gpu, per_prompt]).splitlines()
    assert len(lines) == 2 + 5
    # every row has as many cells as the header
    assert {line.count("|") for line in lines} == {len(COLUMNS) + 1}
    cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    row = dict(zip(COLUMNS, cells))
    assert row["s/step"] == "11.0"  # mean of 10 and 12
    assert row["prompts"] == "1" and row["per-prompt rollout s"] == "–"  # the default P; not measured
    assert row["peak alloc GB"] == "5.50" and row["peak reserved GB"] == "6.25"
    assert row["rollout tok/s"] == "341"  # 2048 / 6
    # 341.3 tok/s / 8 = 42.7 steps/s; bound 3.35e12 / 1.5e9 = 2233 steps/s -> 1.9%
    assert row["decode / BW bound"] == "1.9%"
    assert "out of GPU memory" in lines[3] and "vrft-lite" not in lines[3]
    assert "(RSS)" in lines[4]  # CPU memory is the process's RSS, labelled as such
    assert "not in the bandwidth table" in lines[5]
    row = dict(zip(COLUMNS, [c.strip() for c in lines[6].split("|")[1:-1]]))
    assert row["prompts"] == "4" and row["per-prompt rollout s"] == "0.750"
    assert row["batched speed-up"] == "3.00×"  # 0.75 / 0.25


# ----------------------------------------------------------------------------- options and jobs


def test_each_prompts_value_is_its_own_row():
    import grpo_step

    a = grpo_step.parse_args(["--model", "tiny", "--prompts", "1", "4", "--G", "8", "2", "--systems", "vrft-lite",
                              "trl"])
    jobs = grpo_step.make_jobs(a, {"tiny": "tiny"})
    # G outer, P inner, systems innermost: 2 G × 2 P × 2 systems
    assert [(j["G"], j["prompts"], j["system"]) for j in jobs] == [
        (8, 1, "vrft-lite"), (8, 1, "trl"), (8, 4, "vrft-lite"), (8, 4, "trl"),
        (2, 1, "vrft-lite"), (2, 1, "trl"), (2, 4, "vrft-lite"), (2, 4, "trl")]
    # the micro-batch (4) is clipped to the step's P×G completions: 1×2 = 2 rows, 4×2 = 8 rows
    assert [j["micro_batch"] for j in jobs if j["G"] == 2] == [2, 2, 4, 4]


@pytest.mark.parametrize("argv", [["--prompts", "0"], ["--threads", "0"], ["--G", "1"]])
def test_bad_counts_are_refused(argv):
    import grpo_step

    with pytest.raises(SystemExit):
        grpo_step.parse_args(["--model", "tiny", *argv])


# ----------------------------------------------------------------------------- end to end


def test_missing_trl_is_a_row_not_a_failure(monkeypatch, capsys):
    # TRL is no vrft-lite dependency: without it the harness says how to get it and carries on.
    import importlib.util

    import grpo_step

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    code = grpo_step.main(["--model", "tiny", "--systems", "trl", "--G", "4", "--device", "cpu", "--no-write"])
    out = capsys.readouterr().out
    assert code == 0
    assert "trl not installed (pip install trl)" in out and out.count("| TRL GRPOTrainer") == 1


def test_json_prints_one_object_per_row(monkeypatch, capsys):
    # --json: stdout is JSON lines only, one per (P, system) row, with the table's fields.
    import grpo_step

    def fake_run(job, timeout, tmp, index):
        n = job["prompts"] * job["G"] * job["tokens"]
        return Result(system=job["system"], model=job["model"], prompts=job["prompts"], G=job["G"],
                      micro_batch=job["micro_batch"], image=job["image"], memory_kind="rss", step_s=[2.0],
                      rollout_s=[1.0], reference_s=[0.25], policy_s=[0.5], optimizer_s=[0.25], completion_tokens=[n])

    monkeypatch.setattr(grpo_step, "run_one", fake_run)
    code = grpo_step.main(["--model", "tiny", "--prompts", "1", "2", "--G", "4", "--systems", "vrft-lite", "original",
                           "--device", "cpu", "--tokens", "8", "--no-write", "--json"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["system"], r["prompts"]) for r in rows] == [("vrft-lite", 1), ("original", 1), ("vrft-lite", 2),
                                                            ("original", 2)]
    for r in rows:
        assert {"system", "model", "prompts", "G", "s_per_step", "rollout_s", "reference_s", "policy_s",
                "optimizer_s", "per_prompt_rollout_s", "batched_speedup"} <= set(r)
        assert (r["model"], r["G"], r["s_per_step"], r["rollout_s"]) == ("tiny", 4, 2.0, 1.0)
        assert r["completion_tokens"] == r["prompts"] * 4 * 8


@pytest.mark.slow
def test_harness_runs_on_the_tiny_model(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "grpo_step.py"), "--model", "tiny", "--tokens", "8", "--image", "56",
           "--steps", "1", "--G", "4", "--systems", "vrft-lite", "--device", "cpu", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| vrft-lite")]
    assert len(rows) == 1, out.stdout
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert cells[1:6] == ["tiny", "1", "4", "4", "56"]
    assert cells[COLUMNS.index("s/step")] != "–"  # it measured a step
    written = list(tmp_path.glob("cpu-*.md"))
    assert len(written) == 1
    text = written[0].read_text()
    assert "python bench/grpo_step.py --model tiny --tokens 8" in text and rows[0] in text
    assert "\n- CPU: " in text  # a CPU table names its processor


@pytest.mark.slow
def test_two_prompts_as_json_on_the_tiny_model(tmp_path):
    # 2 prompts × 4 completions × 4 forced tokens: 32 completion tokens a step, and the rollout timed
    # again one prompt per decode round.
    cmd = [sys.executable, str(ROOT / "bench" / "grpo_step.py"), "--model", "tiny", "--tokens", "4", "--image", "56",
           "--prompts", "2", "--G", "4", "--warmup", "0", "--steps", "1", "--systems", "vrft-lite", "--device", "cpu",
           "--threads", "1", "--json", "--no-write"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 1, out.stdout
    r = rows[0]
    assert (r["system"], r["model"], r["prompts"], r["G"], r["status"], r["steps"]) == \
        ("vrft-lite", "tiny", 2, 4, "ok", 1)
    assert r["completion_tokens"] == 2 * 4 * 4
    for key in ("s_per_step", "rollout_s", "reference_s", "policy_s", "optimizer_s", "per_prompt_rollout_s",
                "batched_speedup"):
        assert r[key] > 0, key
    assert r["rollout_s"] < r["s_per_step"]  # a phase of the step, not the step
    assert r["image_tokens"] == 4  # 56×56: 2×2 merged patches
