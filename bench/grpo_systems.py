"""The measuring half of the GRPO-step benchmark: one system, one setting, in this process.

`grpo_step.py` starts this file once per (system, model, prompts, G, micro-batch, image), so each
process's peak memory is its own system's. Two verbs:

    python bench/grpo_systems.py build --size 2b            # random-weight real-shape checkpoint (cached)
    python bench/grpo_systems.py run --spec '{...}' --result out.json

The three systems, all on the same P records (one noise image each, a classification prompt)
and the same config (`settings_config`), each timed per phase after warm-up steps; one optimizer
step = P prompts × G completions:

    vrft-lite  `train.grpo_step(session)` as shipped: NF4 base + LoRA, reference = adapters
               disabled, each image through the vision tower once per step, the P prompts
               prefilled once each and all P×G completions decoded together (explicit decode
               loop; each prompt's KV cache repeated for its G rows). After each step the
               harness also times the same rollout with one prompt per decode round
               (rollout.max_batch_rows = G) on that step's prompts: batched vs per-prompt.
    original   Visual-RFT's released design on one GPU, rebuilt here from vrft-lite's pieces
               (encode_inputs / decode / completion_logprobs): the whole model trainable in bf16
               (no LoRA, no quantisation), a second frozen bf16 copy as the KL reference,
               full-parameter torch AdamW (its states in bf16, as HF Trainer keeps them without
               DeepSpeed: a lower bound on the ZeRO-3 scripts' fp32 master + fp32 states).
               Vision tower trainable, so every policy micro-batch re-encodes its images.
    trl        TRL's GRPOTrainer, imported here only (not a vrft-lite dependency): the same 4-bit
               model and LoRA targets, same P, G, lengths, images, beta, loss "grpo"; one
               generation of P×G completions per optimizer step.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # run from a checkout without installing
sys.path.insert(0, str(BENCH))

import torch  # noqa: E402

from grpo_report import Result, gpu_bandwidth, image_setting  # noqa: E402

BUILD_MARKER = "vrft_bench.json"
CLASS_LABEL = "british_shorthair"


# ----------------------------------------------------------------------------- the model


def checkpoint_dir(size: str, cache_dir: Path | None = None) -> Path:
    """Where the random-weight real-shape checkpoint of `size` lives (named by a hash of what shapes it)."""
    from visualrft_lite.modeling.tiny import default_cache_dir, ensure_tiny_model, real_shape_config

    tiny = ensure_tiny_model()  # its processor drives the real-size model
    spec = real_shape_config(size).to_json_string(use_diff=False) + tiny.name
    tag = hashlib.sha256(spec.encode()).hexdigest()[:10]
    return (cache_dir or default_cache_dir()) / f"bench-qwen2-vl-{size}-{tag}"


def build_checkpoint(size: str, cache_dir: Path | None = None) -> Path:
    """A random-weight Qwen2-VL of the true 2B/7B shape, saved once as bf16 safetensors, with the tiny
    processor beside it so `AutoProcessor.from_pretrained` and vrft-lite's loader take it like a
    hub checkpoint. Memory and speed do not depend on the weights' values when the completion
    length is forced. Initialised on the GPU when there is one (seconds instead of minutes)."""
    from transformers import Qwen2VLForConditionalGeneration

    from visualrft_lite.modeling.tiny import ensure_tiny_model, real_shape_config

    target = checkpoint_dir(size, cache_dir)
    if (target / BUILD_MARKER).is_file():
        return target
    tiny = ensure_tiny_model()
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen2VLForConditionalGeneration._from_config(real_shape_config(size), dtype=torch.bfloat16)
        model.save_pretrained(tmp, safe_serialization=True)
        n_params = sum(p.numel() for p in model.parameters())
        del model
        for f in tiny.iterdir():  # tokenizer, processor configs, chat template, generation config
            if f.name != "config.json" and not f.name.startswith("model") and f.name != "vrft_tiny.json":
                shutil.copy2(f, tmp / f.name)
        for f in tmp.iterdir():
            f.chmod(0o644)  # save_pretrained writes some files 0600; a shared cache must be readable
        marker = {"size": size, "parameters": n_params, "processor": tiny.name}
        (tmp / BUILD_MARKER).write_text(json.dumps(marker) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def decode_weight_bytes(model: Any) -> int:
    """Bytes of weights one decode step reads: the language model's layers and lm_head (LoRA
    adapters included, NF4 blocks' absmax included). Left out: the vision tower (not run while
    decoding) and the input embedding (one row per token), unless it is tied to lm_head."""
    from visualrft_lite.modeling import ops

    core = ops.core(model)
    emb = core.get_input_embeddings().weight
    head = core.get_output_embeddings()
    head = getattr(head, "base_layer", head)  # a LoRA-wrapped head
    total = 0
    for name, p in core.named_parameters():
        if "visual" in name or p is emb:
            continue
        total += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)
        while state is not None:  # NF4 double quantisation nests a second state
            total += state.absmax.numel() * state.absmax.element_size()
            state = getattr(state, "state2", None)
    if head.weight is emb:
        total += emb.numel() * emb.element_size()
    return total


# ----------------------------------------------------------------------------- shared set-up


@dataclasses.dataclass
class Spec:
    """One worker's job (the orchestrator writes it as JSON)."""

    system: str
    model: str  # label: tiny | 2b | 7b
    model_path: str
    G: int
    micro_batch: int
    image: str  # "448" or "max"
    tokens: int
    steps: int
    warmup: int
    prompts: int = 1  # P: prompts per optimizer step
    quant: str = "4bit"
    device: str = "auto"
    lora_r: int = 64
    beta: float = 0.04
    seed: int = 0
    per_prompt: bool = True  # vrft-lite with P > 1: also time the rollout one prompt at a time
    threads: int | None = None  # torch CPU threads (None: torch's default)


def write_records(workdir: Path, image: str, prompts: int, seed: int) -> Path:
    """`prompts` noise images of the same size and a jsonl naming them (vrft-lite's `jsonl` source).

    Same size, same prompt text: every prompt has the same token count, so no system pays for
    padding and a step holds exactly one of each record.
    """
    import numpy as np
    from PIL import Image

    side, _ = image_setting(image)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(prompts):
        pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(workdir / f"image-{i}.png")
        lines.append(json.dumps({"image": f"image-{i}.png", "task": "classify", "solution": CLASS_LABEL,
                                 "kind": "pet", "attribute": "species"}))
    path = workdir / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def settings_config(spec: Spec, data_path: Path) -> Any:
    """The vrft-lite config every system is set up from (the paper's few-shot settings)."""
    from visualrft_lite.config import load_config

    _, max_pixels = image_setting(spec.image)
    return load_config(None, [
        f"model.name={spec.model_path}", f"model.quant={spec.quant}", f"model.device={spec.device}",
        f"model.max_pixels={max_pixels}", "model.min_pixels=3136", "model.gradient_checkpointing=true",
        f"rollout.num_generations={spec.G}", f"rollout.max_completion_length={spec.tokens}",
        f"rollout.min_completion_length={spec.tokens}",  # random weights must not stop early
        "rollout.max_prompt_length=4096",
        f"train.prompts_per_step={spec.prompts}", f"train.micro_batch_size={spec.micro_batch}",
        f"train.steps={spec.warmup + spec.steps}", "train.save_every=0", "train.samples_every=0",
        f"train.seed={spec.seed}", f"lora.r={spec.lora_r}", f"lora.alpha={2 * spec.lora_r}", f"grpo.beta={spec.beta}",
        "grpo.loss_type=grpo", "data.source=jsonl", f"data.path={data_path}", "data.task=classify", "eval.heldout=0",
    ])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_now_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**30
    with open("/proc/self/statm") as f:  # resident pages (Linux)
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def record_peak(device: torch.device, res: Result) -> None:
    if device.type == "cuda":
        res.peak_allocated_gb = torch.cuda.max_memory_allocated(device) / 2**30
        res.peak_reserved_gb = torch.cuda.max_memory_reserved(device) / 2**30
    else:
        import resource

        res.memory_kind = "rss"  # not resettable: includes loading
        res.peak_allocated_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def describe_device(device: torch.device, res: Result) -> None:
    if device.type == "cuda":
        res.device = torch.cuda.get_device_name(device)
        res.bandwidth = gpu_bandwidth(res.device)
        res.memory_kind = "cuda"
    else:
        res.device, res.memory_kind = "cpu", "rss"


def measure_steps(step: Callable[[], dict[str, float]], spec: Spec, device: torch.device, res: Result,
                  after: Callable[[], float] | None = None) -> None:
    """Warm-up steps, then `spec.steps` timed ones; peak memory counts the timed steps only (CUDA).

    `after`, when given, runs after each step, outside the step's clock, and returns the seconds of
    a per-prompt rollout (kept for the timed steps).
    """
    for i in range(spec.warmup + spec.steps):
        if i == spec.warmup:
            sync(device)
            reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        phases = step()
        sync(device)
        took = time.perf_counter() - t0
        extra = after() if after is not None else None
        if i < spec.warmup:
            continue
        res.step_s.append(took)
        res.rollout_s.append(phases["rollout"])
        res.reference_s.append(phases["reference"])
        res.policy_s.append(phases["policy"])
        res.optimizer_s.append(phases["optimizer"])
        res.completion_tokens.append(int(phases["completion_tokens"]))
        if extra is not None:
            res.per_prompt_rollout_s.append(extra)
    record_peak(device, res)


# ----------------------------------------------------------------------------- vrft-lite


def run_vrft_lite(spec: Spec, cfg: Any, workdir: Path, res: Result) -> None:
    """`train.grpo_step(trainer)` as shipped, its own phase timers.

    No synchronize is added here: the step reads its phase clock through `Trainer.clock()`,
    which synchronizes CUDA first, so queued kernels are billed to the phase that queued them.
    `train.sample` is wrapped only to keep the step's Rollout for its token counts.
    """
    from visualrft_lite import train
    from visualrft_lite.modeling.load import resolve_model

    run_dir = workdir / "run"
    run_dir.mkdir()
    cfg = resolve_model(cfg)
    session = train.Trainer(cfg, run_dir, train.Plan.for_train(cfg))
    device = session.device
    describe_device(device, res)
    res.after_load_gb = memory_now_gb(device)
    res.decode_weight_bytes = decode_weight_bytes(session.model)
    res.decode_rows = decode_rows(spec.prompts, spec.G, cfg.rollout.max_batch_rows)

    shipped_sample = train.sample
    last: dict[str, Any] = {}

    def keep_rollout(t: Any, records: list[Any]) -> Any:
        sampled = shipped_sample(t, records)
        last["rollout"] = sampled.rollout
        return sampled

    train.sample = keep_rollout  # grpo_step looks the name up in its module at call time
    per_prompt_cfg = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, max_batch_rows=spec.G))
    timed = spec.per_prompt and spec.prompts > 1

    def per_prompt_rollout() -> float:
        """The step's rollout again, one prompt per decode round, the sampler's state left as it was."""
        records = list(last["rollout"].records)
        state = session.generator.get_state()
        session.cfg = per_prompt_cfg
        try:
            t0 = session.clock()
            ro = shipped_sample(session, records).rollout
            took = session.clock() - t0
        finally:
            session.cfg = cfg
            session.generator.set_state(state)
        if ro is None or ro.completions.size != spec.prompts * spec.G:
            raise RuntimeError("the per-prompt rollout did not produce P×G completions")
        return took

    def step() -> dict[str, float]:
        m = train.grpo_step(session)
        ro = last["rollout"]
        if ro is None:
            raise RuntimeError("no prompt of the step could be encoded")
        res.prompt_tokens = int(ro.batch.lengths.max())
        res.image_tokens = int(ro.features.per_image[0].shape[0])
        return {"rollout": m["time/rollout"], "reference": m["time/reference"], "policy": m["time/policy"],
                "optimizer": m["time/optimizer"], "completion_tokens": int(ro.completions.mask.sum())}

    try:  # the per-prompt rollout runs after each step, outside its clock: the step's figures stay as shipped
        measure_steps(step, spec, device, res, after=per_prompt_rollout if timed else None)
    finally:
        train.sample = shipped_sample


def decode_rows(prompts: int, G: int, max_batch_rows: int) -> int:
    """Completions the decoder takes together: whole prompts, at most max_batch_rows rows (>= one prompt)."""
    return min(prompts, max(1, max_batch_rows // G)) * G


# ----------------------------------------------------------------------------- original design


class OriginalStep:
    """Visual-RFT's design on one GPU: a trainable bf16 model and a frozen bf16 copy for the KL.

    Built from vrft-lite's rollout / log-prob / GRPO functions so that only the design differs:
    no LoRA, no quantisation, a second model (its own vision tower) for the reference,
    full-parameter AdamW, the vision tower in the policy's graph.
    """

    def __init__(self, cfg: Any) -> None:
        from visualrft_lite.data.sources import load_records
        from visualrft_lite.modeling import load as mload

        self.cfg = cfg
        mcfg = dataclasses.replace(cfg.model, quant="none")
        policy = mload.load_base(mcfg)
        self.model, self.processor, self.device = policy.model, policy.processor, policy.device
        self.model.requires_grad_(True)  # everything, vision tower included
        if mcfg.gradient_checkpointing:  # the released scripts pass --gradient_checkpointing true
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.config.use_cache = False
        self.reference = mload.load_base(mcfg).model.eval()  # the second copy, frozen
        self.reference.requires_grad_(False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.train.learning_rate, weight_decay=0.0)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.train.seed)
        self.records = load_records(cfg.data, "train").records[: cfg.train.prompts_per_step]

    def train_step(self) -> tuple[dict[str, float], Any]:
        from visualrft_lite import grpo
        from visualrft_lite.logprobs import all_logprobs, completion_logprobs, micro_batches, pad_to
        from visualrft_lite.modeling import ops
        from visualrft_lite.prompts import render_prompt
        from visualrft_lite.rewards import score
        from visualrft_lite.decoder import Decoding, decode, encode_inputs
        from visualrft_lite.train import fresh_features

        cfg, device, times = self.cfg, self.device, {}
        G, temperature, mb = cfg.rollout.num_generations, cfg.rollout.temperature, cfg.train.micro_batch_size

        t0 = time.perf_counter()  # rollout: encode, vision once, sample P×G together, score
        texts = [render_prompt(r, cfg.data.prompt, coords=cfg.model.coords) for r in self.records]
        enc = encode_inputs(self.model, self.processor, [r.image for r in self.records], texts, device)
        if enc.batch is None or len(enc.kept) != len(self.records):
            raise RuntimeError(f"prompts could not be encoded: {enc.failed}")
        c = decode(self.model, self.processor, enc.batch, enc.features, Decoding.sampling(cfg.rollout),
                   per_prompt=G, generator=self.generator, max_rows=cfg.rollout.max_batch_rows)
        rewards = [score(self.records[p].task, text, self.records[p].solution, image_size=enc.images[p].size,
                         resized_size=enc.batch.resized_sizes[p], options=cfg.reward)
                   for text, p in zip(c.texts, c.prompt_index)]
        totals = torch.tensor([x["total"] for x in rewards], dtype=torch.float32)  # [P*G]
        advantages = grpo.group_advantages(totals, G, cfg.grpo.scale_rewards).to(device)  # [P*G]
        sync(device)
        times["rollout"] = time.perf_counter() - t0

        t1 = time.perf_counter()  # reference: the frozen copy, its own vision tower
        with torch.no_grad():
            ref_features = ops.image_features(self.reference, enc.batch)
        ref_logp = all_logprobs(self.reference, enc.batch, ref_features, c, mb, temperature)  # [P*G, T]
        sync(device)
        times["reference"] = time.perf_counter() - t1

        t2 = time.perf_counter()  # policy: forward/backward per micro-batch, vision in the graph
        self.model.train()
        num_tok = int(c.mask.sum())
        for rows in micro_batches(c.size, mb):
            batch, features, index = fresh_features(self.model, enc.batch, list(c.prompt_index[rows]))
            logp = completion_logprobs(self.model, batch, features, index, c.ids[rows], c.mask[rows],
                                       temperature)  # [b, T]
            T = logp.shape[1]
            loss, _ = grpo.grpo_loss(logp, c.mask[rows][:, :T].to(logp.dtype), advantages[rows],
                                     ref_logp=pad_to(ref_logp[rows], T), beta=cfg.grpo.beta,
                                     loss_type=cfg.grpo.loss_type, num_sequences=c.size, num_tokens=num_tok,
                                     max_completion_length=cfg.rollout.max_completion_length)
            loss.backward()
        sync(device)
        times["policy"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.train.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync(device)
        times["optimizer"] = time.perf_counter() - t3
        times["completion_tokens"] = num_tok
        return times, enc


def run_original(spec: Spec, cfg: Any, workdir: Path, res: Result) -> None:
    system = OriginalStep(cfg)
    describe_device(system.device, res)
    res.after_load_gb = memory_now_gb(system.device)
    res.decode_weight_bytes = decode_weight_bytes(system.model)
    res.decode_rows = decode_rows(spec.prompts, spec.G, cfg.rollout.max_batch_rows)

    def step() -> dict[str, float]:
        times, enc = system.train_step()
        res.prompt_tokens = int(enc.batch.lengths.max())
        res.image_tokens = int(enc.features.per_image[0].shape[0])
        return times

    measure_steps(step, spec, system.device, res)


# ----------------------------------------------------------------------------- TRL


def run_trl(spec: Spec, cfg: Any, workdir: Path, res: Result) -> None:
    """TRL's GRPOTrainer on the same 4-bit model, LoRA targets, P, G, lengths, images and beta.

    One optimizer step = P prompts × G completions: per_device_train_batch_size = micro-batch,
    gradient_accumulation_steps = P·G / micro-batch, generation_batch_size = P·G and
    num_generations = G (TRL generates the whole P·G batch once per accumulation cycle, in one
    `generate` call, one row per completion).
    Phases come from wrapping the trainer's own methods: rollout = `_generate` + rewards;
    reference = the rest of `_generate_and_score_completions` (reference log-probs); policy =
    `training_step` minus generation; optimizer = the step's remainder (clip, AdamW, scheduler,
    logging).
    """
    try:
        import trl
        from trl import GRPOConfig, GRPOTrainer
    except ImportError:
        res.status, res.note = "skipped", "trl not installed (pip install trl)"
        return
    import datasets
    from peft import LoraConfig as PeftLoraConfig
    from transformers import TrainerCallback

    from visualrft_lite.data.images import load_image
    from visualrft_lite.data.sources import load_records
    from visualrft_lite.modeling import load as mload
    from visualrft_lite.prompts import render_prompt
    from visualrft_lite.rewards import score

    rows = spec.prompts * spec.G
    if rows % spec.micro_batch:
        res.status, res.note = "skipped", f"TRL needs P×G divisible by the micro-batch ({rows} % {spec.micro_batch})"
        return
    loaded = mload.load_base(cfg.model)  # the same BitsAndBytesConfig, attention kernel and processor
    device = loaded.device
    describe_device(device, res)
    loaded.processor.tokenizer.padding_side = "left"
    records = load_records(cfg.data, "train").records[: spec.prompts]
    step_rows = [{"prompt": [{"role": "user", "content": render_prompt(r, cfg.data.prompt, coords=cfg.model.coords)}],
                  "image": load_image(r.image), "solution": CLASS_LABEL} for r in records]
    n_steps = spec.warmup + spec.steps
    dataset = datasets.Dataset.from_list(step_rows * n_steps)  # not shuffled: step i takes the P records

    def classify_reward(completions: list[Any], solution: list[str], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [score("classify", t, s)["total"] for t, s in zip(texts, solution)]

    cuda = device.type == "cuda"
    args = GRPOConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=spec.micro_batch,
        gradient_accumulation_steps=rows // spec.micro_batch, generation_batch_size=rows, num_generations=spec.G,
        max_completion_length=spec.tokens, generation_kwargs={"min_new_tokens": spec.tokens},
        temperature=1.0, top_p=1.0, top_k=0, beta=spec.beta, loss_type="grpo", scale_rewards="group",
        learning_rate=cfg.train.learning_rate, lr_scheduler_type="constant", max_grad_norm=cfg.train.max_grad_norm,
        max_steps=n_steps, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=cuda, use_cpu=not cuda, seed=spec.seed, shuffle_dataset=False, dataloader_num_workers=0,
    )
    peft_config = PeftLoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=mload.lora_target_regex(cfg.lora), bias="none")
    trainer = GRPOTrainer(model=loaded.model, reward_funcs=classify_reward, args=args, train_dataset=dataset,
                          processing_class=loaded.processor, peft_config=peft_config)
    res.note = f"trl {trl.__version__}"
    res.after_load_gb = memory_now_gb(device)
    res.decode_weight_bytes = decode_weight_bytes(trainer.model)
    res.decode_rows = rows

    image_token_id = loaded.model.config.image_token_id
    acc = {"generate": 0.0, "rewards": 0.0, "gen_and_score": 0.0, "training_step": 0.0, "tokens": 0}

    def timed(name: str) -> None:
        fn = getattr(trainer, name)
        key = {"_generate": "generate", "_calculate_rewards": "rewards",
               "_generate_and_score_completions": "gen_and_score", "training_step": "training_step"}[name]

        def wrapper(*a: Any, **k: Any) -> Any:
            sync(device)
            t = time.perf_counter()
            out = fn(*a, **k)
            sync(device)
            acc[key] += time.perf_counter() - t
            if name == "_generate":  # (prompt_ids, completion_ids, ...): count what was sampled
                acc["tokens"] += sum(len(c) for c in out[1])
                res.prompt_tokens = len(out[0][0])
                res.image_tokens = sum(1 for t in out[0][0] if t == image_token_id)
            return out

        setattr(trainer, name, wrapper)

    for name in ("_generate", "_calculate_rewards", "_generate_and_score_completions", "training_step"):
        if not hasattr(trainer, name):
            raise RuntimeError(f"trl {trl.__version__} has no GRPOTrainer.{name}; update bench/grpo_systems.py")
        timed(name)

    class Clock(TrainerCallback):
        started = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == spec.warmup:
                reset_peak(device)
            for k in acc:
                acc[k] = 0
            sync(device)
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync(device)
            if state.global_step <= spec.warmup:  # global_step already counts this step
                return
            total = time.perf_counter() - self.started
            rollout = acc["generate"] + acc["rewards"]
            res.step_s.append(total)
            res.rollout_s.append(rollout)
            res.reference_s.append(acc["gen_and_score"] - rollout)
            res.policy_s.append(acc["training_step"] - acc["gen_and_score"])
            res.optimizer_s.append(total - acc["training_step"])
            res.completion_tokens.append(int(acc["tokens"]))

    trainer.add_callback(Clock())
    sync(device)
    trainer.train()
    record_peak(device, res)


# ----------------------------------------------------------------------------- entry point

RUNNERS = {"vrft-lite": run_vrft_lite, "original": run_original, "trl": run_trl}


def run(spec: Spec) -> Result:
    res = Result(system=spec.system, model=spec.model, G=spec.G, micro_batch=spec.micro_batch, image=spec.image,
                 prompts=spec.prompts)
    with tempfile.TemporaryDirectory(prefix="vrft-bench-") as tmp:
        workdir = Path(tmp)
        cfg = settings_config(spec, write_records(workdir, spec.image, spec.prompts, spec.seed))
        if spec.threads:
            torch.set_num_threads(spec.threads)
        torch.manual_seed(spec.seed)
        try:
            RUNNERS[spec.system](spec, cfg, workdir, res)
        except torch.OutOfMemoryError:
            res.status = "oom"  # a finding, not a harness failure
            res.note = "out of GPU memory" + (f" ({torch.cuda.get_device_name()}, "
                                              f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
                                              if torch.cuda.is_available() else "")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("build", help="build (once) the random-weight real-shape checkpoint; prints its folder")
    b.add_argument("--size", choices=["2b", "7b"], required=True)
    b.add_argument("--cache", type=Path, default=None, help="cache folder (default: $VRFT_LITE_HOME/models)")
    r = sub.add_parser("run", help="measure one system; writes a JSON result")
    r.add_argument("--spec", required=True, help="the job as JSON (see Spec)")
    r.add_argument("--result", type=Path, required=True, help="where to write the result JSON")
    a = p.parse_args(argv)
    if a.verb == "build":
        print(build_checkpoint(a.size, a.cache))
        return 0
    spec = Spec(**json.loads(a.spec))
    try:
        res = run(spec)
    except Exception as e:  # noqa: BLE001 - the table shows the failure; the log holds the traceback
        traceback.print_exc()
        first = str(e).splitlines()[0][:160] if str(e) else ""
        oom = "out of memory" in str(e).lower()  # OOM raised as a plain RuntimeError (bitsandbytes, CUDA errors)
        res = Result(system=spec.system, model=spec.model, G=spec.G, micro_batch=spec.micro_batch, image=spec.image,
                     prompts=spec.prompts, status="oom" if oom else "failed", note=f"{type(e).__name__}: {first}")
    a.result.write_text(json.dumps(dataclasses.asdict(res)) + "\n")
    return 0 if res.status != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
