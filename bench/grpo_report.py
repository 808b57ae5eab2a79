"""The pure half of the GRPO-step benchmark: memory-bandwidth bound, summaries, the markdown table.

No torch, no transformers: `tests/test_bench.py` checks these in milliseconds. The measuring half
is `grpo_systems.py` (one system in one process); `grpo_step.py` runs it and prints this table.

Decode speed against the memory-bandwidth bound: one decode step of the batch (one new token for
each of the rows decoded together, P×G when all P prompts' completions share the batch) must read
every weight the language model uses once, so a GPU of bandwidth W bytes/s can do at most
W / bytes_per_step decode steps per second. The fraction we report is measured decode steps/s
over that bound. Example (the test's): 1.5e9 parameters at
0.5 bytes (NF4) = 0.75 GB per step; at 3.35 TB/s the bound is 4467 steps/s (0.224 ms each), so
100 steps/s is 0.0224 of it. The KV cache the step also reads is left out (it grows with the
sequence; for Qwen2-VL-2B it is 28 KB per token per completion).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

# Peak memory bandwidth, bytes/s, by a substring of torch.cuda.get_device_name(); first match wins,
# so the specific names come before the general ones.
GPU_BANDWIDTH: list[tuple[str, float]] = [
    ("H100 PCIe", 2.0e12),
    ("H100 NVL", 3.9e12),
    ("H100", 3.35e12),  # SXM (HBM3): the name reads "NVIDIA H100 80GB HBM3"
    ("H200", 4.8e12),
    ("A100 80GB", 2.0e12),  # "NVIDIA A100 80GB PCIe"
    ("A100-SXM4-80GB", 2.0e12),
    ("RTX 4090", 1.0e12),
]

SYSTEM_LABELS = {
    "vrft-lite": "vrft-lite (4-bit + LoRA, ref = adapters off)",
    "trl": "TRL GRPOTrainer (4-bit + LoRA)",
    "original": "original design (bf16 full model + frozen ref copy)",
}


def gpu_bandwidth(device_name: str) -> float | None:
    """Peak memory bandwidth in bytes/s for a CUDA device name; None when the GPU is not in the table."""
    for key, bandwidth in GPU_BANDWIDTH:
        if key.lower() in device_name.lower():
            return bandwidth
    return None


def bound_steps_per_s(weight_bytes: float, bandwidth: float) -> float:
    """The most decode steps per second when each step reads `weight_bytes` at `bandwidth` bytes/s."""
    if weight_bytes <= 0 or bandwidth <= 0:
        raise ValueError(f"weight_bytes and bandwidth must be > 0, got {weight_bytes}, {bandwidth}")
    return bandwidth / weight_bytes


def bound_fraction(decode_steps_per_s: float, weight_bytes: float, bandwidth: float) -> float:
    """Measured decode steps/s as a fraction of the memory-bandwidth bound."""
    return decode_steps_per_s / bound_steps_per_s(weight_bytes, bandwidth)


def device_slug(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'; the results file is named by it."""
    return re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or "unknown"


PAPER_MAX_PIXELS = 401408  # 512·28·28, Visual-RFT's cap on the resized image's area
PATCH = 28  # Qwen2-VL resizes to multiples of patch 14 × spatial merge 2


def image_setting(image: str) -> tuple[int, int]:
    """--image value -> (side of the square test image, model.max_pixels).

    '448': a 448x448 image kept at that size (16x16 merged patches = 256 image tokens);
    'max': a 1024x1024 image resized under the paper's max_pixels (to 616x616 = 484 image tokens).
    """
    if image == "max":
        return 1024, PAPER_MAX_PIXELS
    if not image.isdigit() or int(image) < 56 or int(image) % PATCH:
        raise ValueError(f"--image takes a side in pixels that is a multiple of {PATCH} and >= 56 "
                         f"(e.g. 448), or 'max' for the paper's max_pixels; got {image!r}")
    side = int(image)
    return side, side * side


def results_path(out_dir: Path, device_name: str, date: str) -> Path:
    return Path(out_dir) / f"{device_slug(device_name)}-{date}.md"


# ----------------------------------------------------------------------------- one row


@dataclass
class Result:
    """What one worker process measured for one (system, model, prompts, G, micro-batch, image)."""

    system: str
    model: str
    G: int
    micro_batch: int
    image: str
    prompts: int = 1  # P: prompts per optimizer step, each with G completions
    status: str = "ok"  # ok | oom (out of GPU memory: a finding) | failed (the harness broke) | skipped
    note: str = ""
    device: str = "cpu"
    memory_kind: str = "cuda"  # cuda: torch's allocator counters; rss: process peak RSS (CPU)
    peak_allocated_gb: float | None = None
    peak_reserved_gb: float | None = None
    after_load_gb: float | None = None
    step_s: list[float] = field(default_factory=list)
    rollout_s: list[float] = field(default_factory=list)
    reference_s: list[float] = field(default_factory=list)
    policy_s: list[float] = field(default_factory=list)
    optimizer_s: list[float] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    # vrft-lite only: the same rollout phase with one prompt decoded at a time
    # (rollout.max_batch_rows = G), timed after each step on that step's prompts
    per_prompt_rollout_s: list[float] = field(default_factory=list)
    decode_rows: int | None = None  # completions decoded together (default P×G)
    decode_weight_bytes: float | None = None
    bandwidth: float | None = None
    prompt_tokens: int | None = None
    image_tokens: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def rollout_tokens_per_s(self) -> float | None:
        if not self.rollout_s:
            return None
        return mean(n / max(t, 1e-9) for n, t in zip(self.completion_tokens, self.rollout_s))

    def decode_fraction(self) -> float | None:
        """Rollout decode steps/s (completion tokens / rows decoded together / rollout seconds) over
        the bandwidth bound.

        The rollout time also holds the prompts' prefill, the vision tower and the reward, so this
        slightly understates the decode loop's own speed.
        """
        tps = self.rollout_tokens_per_s()
        if tps is None or not self.decode_weight_bytes or not self.bandwidth:
            return None
        rows = self.decode_rows or self.prompts * self.G
        return bound_fraction(tps / rows, self.decode_weight_bytes, self.bandwidth)

    def batched_speedup(self) -> float | None:
        """Per-prompt rollout seconds over batched rollout seconds (means); None when not measured."""
        if not self.per_prompt_rollout_s or not self.rollout_s:
            return None
        return mean(self.per_prompt_rollout_s) / max(mean(self.rollout_s), 1e-9)

    def summary(self) -> dict[str, Any]:
        """The row as one flat JSON-ready dict: the table's columns as numbers (means; None if absent)."""

        def avg(values: list[float]) -> float | None:
            return mean(values) if values else None

        return {
            "system": self.system, "model": self.model, "prompts": self.prompts, "G": self.G,
            "micro_batch": self.micro_batch, "image": self.image, "status": self.status, "note": self.note,
            "device": self.device, "memory_kind": self.memory_kind, "peak_allocated_gb": self.peak_allocated_gb,
            "peak_reserved_gb": self.peak_reserved_gb, "after_load_gb": self.after_load_gb,
            "steps": len(self.step_s), "s_per_step": avg(self.step_s), "rollout_s": avg(self.rollout_s),
            "reference_s": avg(self.reference_s), "policy_s": avg(self.policy_s),
            "optimizer_s": avg(self.optimizer_s), "completion_tokens": avg(self.completion_tokens),
            "rollout_tokens_per_s": self.rollout_tokens_per_s(), "decode_bound_fraction": self.decode_fraction(),
            "per_prompt_rollout_s": avg(self.per_prompt_rollout_s), "batched_speedup": self.batched_speedup(),
            "prompt_tokens": self.prompt_tokens, "image_tokens": self.image_tokens,
        }


# ----------------------------------------------------------------------------- formatting


def fmt_seconds(values: list[float]) -> str:
    if not values:
        return "–"
    x = mean(values)
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def fmt_gb(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def fmt_speedup(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def fmt_fraction(x: float | None) -> str:
    if x is None:
        return "–"
    pct = 100 * x
    return f"{pct:.1f}%" if pct >= 0.1 else f"{pct:.2g}%"


COLUMNS = ["system", "model", "prompts", "G", "micro-batch", "image", "peak alloc GB", "peak reserved GB",
           "after load GB", "s/step", "rollout s", "reference s", "policy fwd-bwd s", "optimizer s", "rollout tok/s",
           "decode / BW bound", "per-prompt rollout s", "batched speed-up", "note"]


def table_row(r: Result) -> list[str]:
    label = SYSTEM_LABELS.get(r.system, r.system)
    head = [label, r.model, str(r.prompts), str(r.G), str(r.micro_batch), r.image]
    if r.status != "ok":
        return head + ["–"] * (len(COLUMNS) - len(head) - 1) + [r.note]
    if r.memory_kind == "rss":
        memory = [f"{fmt_gb(r.peak_allocated_gb)} (RSS)", "–", fmt_gb(r.after_load_gb) + " (RSS)"]
    else:
        memory = [fmt_gb(r.peak_allocated_gb), fmt_gb(r.peak_reserved_gb), fmt_gb(r.after_load_gb)]
    decode = fmt_fraction(r.decode_fraction())
    if r.memory_kind == "cuda" and r.bandwidth is None:
        decode = "? (GPU not in the bandwidth table)"
    return head + memory + [
        fmt_seconds(r.step_s), fmt_seconds(r.rollout_s), fmt_seconds(r.reference_s), fmt_seconds(r.policy_s),
        fmt_seconds(r.optimizer_s), fmt_rate(r.rollout_tokens_per_s()), decode, fmt_seconds(r.per_prompt_rollout_s),
        fmt_speedup(r.batched_speedup()), r.note,
    ]


def markdown_table(results: list[Result]) -> str:
    """One markdown table, a row per result, in the order given."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in results:
        cells = [c.replace("|", "/").replace("\n", " ") for c in table_row(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(results: list[Result]) -> list[str]:
    """Per-run facts under the table: device, bandwidth, bytes read per decode step, token counts."""
    ok = [r for r in results if r.status == "ok"]
    out = []
    devices = sorted({r.device for r in ok})
    if devices:
        out.append(f"device: {', '.join(devices)}")
    for d in devices:
        bw = next((r.bandwidth for r in ok if r.device == d), None)
        if d != "cpu":
            out.append(f"bandwidth used for the bound: {bw / 1e12:.2f} TB/s" if bw else
                       f"bandwidth of {d} unknown: add it to GPU_BANDWIDTH in bench/grpo_report.py")
    seen = set()
    for r in ok:
        key = (r.system, r.model)
        if r.decode_weight_bytes and key not in seen:
            seen.add(key)
            out.append(f"{SYSTEM_LABELS.get(r.system, r.system)}, {r.model}: {r.decode_weight_bytes / 1e9:.3f} GB "
                       f"of weights read per decode step")
    for image in sorted({(r.model, r.image, r.prompt_tokens, r.image_tokens) for r in ok if r.prompt_tokens},
                        key=str):
        out.append(f"{image[0]}, image {image[1]}: prompt {image[2]} tokens of which {image[3]} image tokens")
    out += token_notes(ok)
    return out


def tokens_per_completion(r: Result) -> float | None:
    """Mean completion tokens per sampled completion (P×G completions a step)."""
    if not r.completion_tokens:
        return None
    return mean(r.completion_tokens) / (r.prompts * r.G)


def token_notes(results: list[Result]) -> list[str]:
    """Whether every row sampled the same completion length: the rows are comparable only if so."""
    lengths = [(r, tokens_per_completion(r)) for r in results if r.completion_tokens]
    if not lengths:
        return []
    if len({n for _, n in lengths}) == 1:
        return [f"every row sampled {lengths[0][1]:g} tokens per completion"]
    return [f"{SYSTEM_LABELS.get(r.system, r.system)}, {r.model}, P {r.prompts}, G {r.G}: {n:g} tokens per "
            f"completion" for r, n in lengths]
