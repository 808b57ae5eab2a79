"""Memory and speed of one GRPO step: vrft-lite, TRL's GRPOTrainer and the original design, side by side.

Each (system × model × prompts × G × micro-batch × image) runs in its own process
(`grpo_systems.py run`), so peak memory is that system's alone: warm-up steps, then --steps timed
steps, peak memory over the timed steps (CUDA's allocator counters; process peak RSS on CPU). One
optimizer step is P prompts × G completions (--prompts, --G). One markdown table goes to stdout
(or, with --json, one JSON object per row) and is appended to bench/results/<device>-<date>.md
with the exact command line.

vrft-lite rows with P > 1 also time the rollout with one prompt per decode round
(rollout.max_batch_rows = G, the same code) after each step: the "per-prompt rollout s" and
"batched speed-up" columns.

    # the paper's settings on a GPU: 2B and 7B, G 8 and 4, 448x448, 256 tokens
    python bench/grpo_step.py --model 2b 7b --G 8 4 --image 448 --tokens 256 --steps 3
    # prompts per step: 1, 2, 4 and 8 prompts of G completions each, vrft-lite vs TRL
    python bench/grpo_step.py --model 2b --prompts 1 2 4 8 --G 8 --systems vrft-lite trl
    # the harness on CPU in a minute or two: the tiny model, short completions, a small image
    python bench/grpo_step.py --model tiny --G 8 4 --image 112 --tokens 32 --steps 2
    # micro-batch variants, rows as JSON lines
    python bench/grpo_step.py --model 2b --G 8 --micro-batch 1 4 8 --systems vrft-lite trl --json

2b / 7b are random-weight checkpoints of the true Qwen2-VL shapes, built once into
$VRFT_LITE_HOME/models (bf16 safetensors; on the GPU when there is one) and loaded through
vrft-lite's normal path (from_pretrained with the NF4 BitsAndBytesConfig). Completion length is
forced (min = max new tokens), so the weights' values do not change memory or speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from grpo_report import SYSTEM_LABELS, Result, image_setting, markdown_table, notes, results_path  # noqa: E402

SYSTEMS = ("vrft-lite", "trl", "original")
MODELS = ("tiny", "2b", "7b")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", choices=MODELS, default=None,
                   help="model sizes (default: 2b 7b with CUDA, tiny without)")
    p.add_argument("--prompts", nargs="+", type=int, default=[1],
                   help="prompts per optimizer step, each with G completions; each value its own rows (default: 1)")
    p.add_argument("--G", nargs="+", type=int, default=[8, 4], help="completions per prompt (default: 8 4)")
    p.add_argument("--image", nargs="+", default=["448"],
                   help="square image side in pixels (multiple of 28), or 'max' = the paper's max_pixels 401408 "
                        "(default: 448)")
    p.add_argument("--tokens", type=int, default=256, help="completion length, forced (default: 256)")
    p.add_argument("--micro-batch", nargs="+", type=int, default=[4],
                   help="completions per forward/backward (default: 4)")
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS),
                   help="which systems (default: all three)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per row (default: 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    p.add_argument("--lora-r", type=int, default=64, help="LoRA rank (alpha = 2r; default: 64)")
    p.add_argument("--beta", type=float, default=0.04, help="KL weight (default: 0.04)")
    p.add_argument("--quant", choices=["4bit", "8bit", "none"], default="4bit",
                   help="base weights of vrft-lite and trl (default: 4bit)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per row (default: torch's own); 1 on a CPU shared with other work, "
                        "where spinning worker threads stall")
    p.add_argument("--out", type=Path, default=BENCH / "results", help="results folder (default: bench/results)")
    p.add_argument("--cache", type=Path, default=None, help="checkpoint cache (default: $VRFT_LITE_HOME/models)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per row before it is marked failed")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--json", action="store_true",
                   help="stdout: one JSON object per row (the table's columns as numbers) instead of the table")
    p.add_argument("--no-per-prompt", action="store_true",
                   help="skip the per-prompt rollout timing of vrft-lite rows (P > 1)")
    a = p.parse_args(argv)
    try:
        for image in a.image:
            image_setting(image)
    except ValueError as e:
        p.error(str(e))
    if a.tokens < 1 or a.steps < 1 or a.warmup < 0 or min(a.G) < 2 or min(a.micro_batch) < 1 or min(a.prompts) < 1 \
            or (a.threads is not None and a.threads < 1):
        p.error("need --tokens >= 1, --steps >= 1, --warmup >= 0, --G >= 2, --micro-batch >= 1, --prompts >= 1, "
                "--threads >= 1")
    return a


def device_name(device: str) -> str:
    """'cpu' or the GPU's name, asked in a child process: this one never touches the GPU, so no
    CUDA context of its own sits in the memory the rows measure."""
    if device == "cpu":
        return "cpu"
    code = ("import torch; d = torch.device('cuda' if %r == 'auto' else %r); "
            "print(torch.cuda.get_device_name(d) if d.type == 'cuda' and torch.cuda.is_available() else 'cpu')"
            % (device, device))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    return lines[-1] if out.returncode == 0 and lines else "cpu"


def cpu_model() -> str:
    """'AMD EPYC, 2 cores': the processor's name as /proc/cpuinfo gives it (Linux), and the cores usable here."""
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores"


def model_path(model: str, cache: Path | None, log: Path) -> str:
    if model == "tiny":
        return "tiny"
    cmd = [sys.executable, str(BENCH / "grpo_systems.py"), "build", "--size", model]
    if cache is not None:
        cmd += ["--cache", str(cache)]
    print(f"building / finding the random-weight {model} checkpoint ...", file=sys.stderr, flush=True)
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"building the {model} checkpoint failed; see {log}:\n{tail(log)}")
    return proc.stdout.strip().splitlines()[-1]


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_one(job: dict, timeout: int, tmp: Path, index: int) -> Result:
    result_file, log = tmp / f"result-{index}.json", tmp / f"log-{index}.txt"
    cmd = [sys.executable, str(BENCH / "grpo_systems.py"), "run", "--spec", json.dumps(job),
           "--result", str(result_file)]
    base = {k: job[k] for k in ("system", "model", "prompts", "G", "micro_batch", "image")}
    try:
        with log.open("w") as f:
            subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(**base, status="failed", note=f"timed out after {timeout} s")
    if result_file.is_file():
        res = Result.from_dict(json.loads(result_file.read_text()))
    else:  # killed (host out of memory, a crash in native code): no result written
        last = [line for line in tail(log, 40).splitlines() if line.strip()]
        res = Result(**base, status="failed", note=f"worker died: {last[-1][:160] if last else 'no output'}")
    if res.status == "failed":
        print(f"  {res.note}\n  last lines of the log ({log}):\n{tail(log)}", file=sys.stderr)
    return res


def make_jobs(a: argparse.Namespace, paths: dict[str, str]) -> list[dict]:
    """One job per (model, image, G, P, micro-batch, system), in that nesting; micro-batch clipped to P×G."""
    jobs = [dict(system=s, model=m, model_path=paths[m], prompts=P, G=G, micro_batch=min(mb, P * G), image=image,
                 tokens=a.tokens, steps=a.steps, warmup=a.warmup, quant=a.quant, device=a.device,
                 lora_r=a.lora_r, beta=a.beta, per_prompt=not a.no_per_prompt, threads=a.threads)
            for m in paths for image in a.image for G in a.G for P in a.prompts for mb in a.micro_batch
            for s in a.systems]
    return list({json.dumps(j, sort_keys=True): j for j in jobs}.values())  # mb clipped to P×G can repeat


def load_average() -> float | None:
    """The 1-minute load average (Unix), sampled before and after each row: CPU timings are only as
    quiet as the machine was."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def report(command: str, started: str, models: list[str], a: argparse.Namespace, results: list[Result],
           loads: list[float | None] | None = None) -> str:
    """The run's section of the results file: command, settings, table, notes."""
    settings = (f"P prompts × G completions per step, completion length forced to {a.tokens} tokens (all systems), "
                f"LoRA r {a.lora_r} "
                f"(alpha {2 * a.lora_r}) on all language linear layers, beta {a.beta}, base {a.quant} "
                f"(vrft-lite, trl), gradient checkpointing, {a.warmup} warm-up + {a.steps} timed steps per row "
                f"(means shown)" + (f", {a.threads} CPU thread(s) per row" if a.threads else ""))
    lines = [f"## {started}: {', '.join(models)}", "", "```", command, "```", "", settings, "",
             markdown_table(results), ""]
    lines += [f"- {line}" for line in notes(results)]
    if any(r.device == "cpu" and r.status == "ok" for r in results):
        lines.append(f"- CPU: {cpu_model()}")
        seen = [x for x in loads or [] if x is not None]
        if seen:
            lines.append(f"- load average (1 min) over the run: {min(seen):.1f} to {max(seen):.1f}")
    lines += ["- systems: " + "; ".join(f"{k} = {v}" for k, v in SYSTEM_LABELS.items()),
              "- phases: rollout = prompt encoding + vision + sampling + reward; reference = KL reference "
              "log-probs; policy = forward/backward of the GRPO loss; optimizer = clip + AdamW step "
              "(trl: the step's remainder, its logging included)",
              "- per-prompt rollout (vrft-lite, P > 1): the step's rollout again with rollout.max_batch_rows = G, so "
              "the decoder takes one prompt's G completions per round; batched speed-up = per-prompt rollout s / "
              "rollout s",
              "- memory: CUDA rows are torch.cuda.max_memory_allocated / max_memory_reserved over the timed "
              "steps; CPU rows show the process's peak RSS (loading included)", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    command = "python bench/grpo_step.py " + " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    device = device_name(a.device)
    models = a.model or (["tiny"] if device == "cpu" else ["2b", "7b"])
    started = time.strftime("%Y-%m-%d %H:%M")
    loads = [load_average()]
    path = results_path(a.out, device, time.strftime("%Y-%m-%d"))
    before = path.read_text() if path.exists() else f"# GRPO step benchmark on {device}\n\n"
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="vrft-bench-") as tmp_name:
        tmp = Path(tmp_name)
        paths = {m: model_path(m, a.cache, tmp / f"build-{m}.txt") for m in models}
        jobs = make_jobs(a, paths)
        for i, job in enumerate(jobs):
            label = (f"[{i + 1}/{len(jobs)}] {job['system']} {job['model']} P={job['prompts']} G={job['G']} "
                     f"mb={job['micro_batch']} image={job['image']}")
            print(label, "...", file=sys.stderr, flush=True)
            if job["system"] == "trl" and importlib.util.find_spec("trl") is None:
                res = Result(system="trl", model=job["model"], prompts=job["prompts"], G=job["G"],
                             micro_batch=job["micro_batch"], image=job["image"], status="skipped",
                             note="trl not installed (pip install trl)")
            else:
                res = run_one(job, a.timeout, tmp, i)
            results.append(res)
            loads.append(load_average())
            done = f"{sum(res.step_s) / len(res.step_s):.2f} s/step" if res.step_s else res.note
            print(f"{label}: {done}", file=sys.stderr, flush=True)
            if not a.no_write:  # after every row: a run killed part-way still leaves what it measured
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(before + report(command, started, models, a, results, loads))

    if a.json:
        for r in results:
            print(json.dumps(r.summary()))
    else:
        print(markdown_table(results))
        for line in notes(results):
            print(f"- {line}")
    if not a.no_write:
        print(f"\nwritten to {path}", file=sys.stderr)
    return 0 if all(r.status != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
