"""The measuring half of the GRPO-step benchmark: one system, one setting, in this process.

`grpo_step.py` starts this file once per (system, model, G, micro-batch, image), so each process's
peak memory is its own system's. Two verbs:

    python bench/grpo_systems.py build --size 2b            # random-weight real-shape checkpoint (cached)
    python bench/grpo_systems.py run --spec '{...}' --result out.json

The three systems, all on the same record (one image, a classification prompt) and the same
config (`settings_config`), each timed per phase after warm-up steps:

    vrft-lite  `Trainer.train_step()` as shipped: NF4 base + LoRA, reference = adapters disabled,
               image encoded once per step, explicit decode loop sharing the prompt's KV cache.
    original   Visual-RFT's released design on one GPU, rebuilt here from vrft-lite's pieces: the
               whole model trainable in bf16 (no LoRA, no quantisation), a second frozen bf16 copy
               as the KL reference, full-parameter torch AdamW (its states in bf16, as HF Trainer
               keeps them without DeepSpeed: a lower bound on the ZeRO-3 scripts' fp32 master +
               fp32 states). Vision tower trainable, so every policy micro-batch re-encodes the image.
    trl        TRL's GRPOTrainer, imported here only (not a vrft-lite dependency): the same 4-bit
               model and LoRA targets, same G, lengths, image, beta, loss "grpo".
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
    quant: str = "4bit"
    device: str = "auto"
    lora_r: int = 64
    beta: float = 0.04
    seed: int = 0


def write_record(workdir: Path, image: str, seed: int) -> Path:
    """One noise image and a one-line jsonl naming it (vrft-lite's own `jsonl` data source)."""
    import numpy as np
    from PIL import Image

    side, _ = image_setting(image)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(workdir / "image.png")
    path = workdir / "data.jsonl"
    path.write_text(json.dumps({"image": "image.png", "task": "classify", "solution": CLASS_LABEL,
                                "kind": "pet", "attribute": "species"}) + "\n")
    return path


def settings_config(spec: Spec, data_path: Path) -> Any:
    """The vrft-lite config every system is set up from (the issue's settings)."""
    from visualrft_lite.config import load_config

    _, max_pixels = image_setting(spec.image)
    return load_config(None, [
        f"model.name={spec.model_path}", f"model.quant={spec.quant}", f"model.device={spec.device}",
        f"model.max_pixels={max_pixels}", "model.min_pixels=3136", "model.gradient_checkpointing=true",
        f"rollout.num_generations={spec.G}", f"rollout.max_completion_length={spec.tokens}",
        f"rollout.min_completion_length={spec.tokens}",  # random weights must not stop early
        "rollout.max_prompt_length=4096",
        "train.prompts_per_step=1", f"train.micro_batch_size={spec.micro_batch}",
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


def synced(fn: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """`fn` followed by a CUDA synchronize (a no-op on CPU)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        sync(device)
        return out

    return wrapper


def measure_steps(step: Callable[[], dict[str, float]], spec: Spec, device: torch.device, res: Result) -> None:
    """Warm-up steps, then `spec.steps` timed ones; peak memory counts the timed steps only (CUDA)."""
    for i in range(spec.warmup + spec.steps):
        if i == spec.warmup:
            sync(device)
            reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        phases = step()
        sync(device)
        if i < spec.warmup:
            continue
        res.step_s.append(time.perf_counter() - t0)
        res.rollout_s.append(phases["rollout"])
        res.reference_s.append(phases["reference"])
        res.policy_s.append(phases["policy"])
        res.optimizer_s.append(phases["optimizer"])
        res.completion_tokens.append(int(phases["completion_tokens"]))
    record_peak(device, res)


# ----------------------------------------------------------------------------- vrft-lite


def run_vrft_lite(spec: Spec, cfg: Any, workdir: Path, res: Result) -> None:
    from visualrft_lite.train import Trainer

    trainer = Trainer(cfg, workdir / "run", quiet=True)
    device = trainer.device
    # train_step times its phases without a CUDA synchronize: queued kernels of one phase would be
    # billed to the next. Synchronizing at the end of each phase makes its own timers exact.
    for name in ("rollout", "logprobs_no_grad", "policy_update", "optimizer_step"):
        setattr(trainer, name, synced(getattr(trainer, name), device))
    describe_device(device, res)
    res.after_load_gb = memory_now_gb(device)
    res.decode_weight_bytes = decode_weight_bytes(trainer.model)

    def step() -> dict[str, float]:
        m = trainer.train_step()
        r = trainer.last_rollouts[0]
        res.prompt_tokens, res.image_tokens = r.prompt.length, int(r.embeds.shape[0])
        return {"rollout": m["time/rollout"], "reference": m["time/reference"], "policy": m["time/policy"],
                "optimizer": m["time/optimizer"], "completion_tokens": int(r.group.completion_mask.sum())}

    measure_steps(step, spec, device, res)


# ----------------------------------------------------------------------------- original design


class OriginalStep:
    """Visual-RFT's design on one GPU: a trainable bf16 model and a frozen bf16 copy for the KL.

    Built from vrft-lite's rollout / GRPO functions so that only the design differs: no LoRA, no
    quantisation, a second model for the reference, full-parameter AdamW.
    """

    def __init__(self, cfg: Any) -> None:
        from visualrft_lite.data.images import load_image
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
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.train.learning_rate, weight_decay=0.0)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.train.seed)
        self.record = load_records(cfg.data, "train").records[0]
        self.image = load_image(self.record.image)

    def train_step(self) -> tuple[dict[str, float], Any]:
        from visualrft_lite import grpo
        from visualrft_lite.modeling import ops
        from visualrft_lite.prompts import render_prompt
        from visualrft_lite.rewards import score_batch
        from visualrft_lite.rollout import sample_group
        from visualrft_lite.train import Rollout, completion_logprobs, group_logprobs, micro_batches, pad_to

        cfg, device, times = self.cfg, self.device, {}
        G, temperature = cfg.rollout.num_generations, cfg.rollout.temperature

        t0 = time.perf_counter()  # rollout: encode, vision once, sample G, score
        text = render_prompt(self.record, cfg.data.prompt, coords=cfg.model.coords)
        prompt = ops.encode_prompt(self.model, self.processor, self.image, text, device)
        with torch.no_grad():
            embeds = ops.image_embeds(self.model, prompt)  # [n_image_tokens, H]
        group = sample_group(self.model, self.processor, prompt, embeds, cfg.rollout, generator=self.generator)
        rewards = score_batch("classify", group.texts, self.record.solution, image_size=self.image.size,
                              resized_size=prompt.resized_size, options=cfg.reward)
        r = Rollout(self.record, prompt, embeds, group, rewards)
        totals = torch.tensor([x["total"] for x in rewards], dtype=torch.float32)  # [G]
        r.advantages = grpo.group_advantages(totals, G, cfg.grpo.scale_rewards).to(device)  # [G]
        sync(device)
        times["rollout"] = time.perf_counter() - t0

        t1 = time.perf_counter()  # reference: the frozen copy, its own vision tower
        with torch.no_grad():
            ref_embeds = ops.image_embeds(self.reference, prompt)
            parts = [completion_logprobs(self.reference, prompt, ref_embeds, group.completion_ids[rows],
                                         group.completion_mask[rows], temperature)
                     for rows in micro_batches(G, cfg.train.micro_batch_size)]
            T = max(p.shape[1] for p in parts)
            r.ref_logp = torch.cat([pad_to(p, T) for p in parts])  # [G, T]
        sync(device)
        times["reference"] = time.perf_counter() - t1

        t2 = time.perf_counter()  # policy: forward/backward per micro-batch, vision in the graph
        self.model.train()
        num_tok = int(group.completion_mask.sum())
        for rows in micro_batches(G, cfg.train.micro_batch_size):
            logp = group_logprobs(self.model, r, rows, temperature, vision_grad=True)  # [b, T]
            T = logp.shape[1]
            loss, _ = grpo.grpo_loss(logp, group.completion_mask[rows][:, :T].to(logp.dtype), r.advantages[rows],
                                     ref_logp=pad_to(r.ref_logp[rows], T), beta=cfg.grpo.beta,
                                     loss_type=cfg.grpo.loss_type, num_sequences=G, num_tokens=num_tok,
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
        return times, r


def run_original(spec: Spec, cfg: Any, workdir: Path, res: Result) -> None:
    system = OriginalStep(cfg)
    describe_device(system.device, res)
    res.after_load_gb = memory_now_gb(system.device)
    res.decode_weight_bytes = decode_weight_bytes(system.model)

    def step() -> dict[str, float]:
        times, r = system.train_step()
        res.prompt_tokens, res.image_tokens = r.prompt.length, int(r.embeds.shape[0])
        return times

    measure_steps(step, spec, system.device, res)


# ----------------------------------------------------------------------------- TRL


def run_trl(spec: Spec, cfg: Any, workdir: Path, res: Result) -> None:
    """TRL's GRPOTrainer on the same 4-bit model, LoRA targets, G, lengths, image and beta.

    One optimizer step = one prompt's G completions: per_device_train_batch_size = micro-batch,
    gradient_accumulation_steps = G / micro-batch (TRL generates once per accumulation cycle).
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

    if spec.G % spec.micro_batch:
        res.status, res.note = "skipped", f"TRL needs G divisible by the micro-batch ({spec.G} % {spec.micro_batch})"
        return
    loaded = mload.load_base(cfg.model)  # the same BitsAndBytesConfig, attention kernel and processor
    device = loaded.device
    describe_device(device, res)
    loaded.processor.tokenizer.padding_side = "left"
    record = load_records(cfg.data, "train").records[0]
    image = load_image(record.image)
    text = render_prompt(record, cfg.data.prompt, coords=cfg.model.coords)
    n_prompts = spec.warmup + spec.steps
    dataset = datasets.Dataset.from_list(
        [{"prompt": [{"role": "user", "content": text}], "image": image, "solution": CLASS_LABEL}] * n_prompts)

    def classify_reward(completions: list[Any], solution: list[str], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [score("classify", t, s)["total"] for t, s in zip(texts, solution)]

    cuda = device.type == "cuda"
    args = GRPOConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=spec.micro_batch,
        gradient_accumulation_steps=spec.G // spec.micro_batch, num_generations=spec.G,
        max_completion_length=spec.tokens, generation_kwargs={"min_new_tokens": spec.tokens},
        temperature=1.0, top_p=1.0, top_k=0, beta=spec.beta, loss_type="grpo", scale_rewards="group",
        learning_rate=cfg.train.learning_rate, lr_scheduler_type="constant", max_grad_norm=cfg.train.max_grad_norm,
        max_steps=n_prompts, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
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
    res = Result(system=spec.system, model=spec.model, G=spec.G, micro_batch=spec.micro_batch, image=spec.image)
    with tempfile.TemporaryDirectory(prefix="vrft-bench-") as tmp:
        workdir = Path(tmp)
        cfg = settings_config(spec, write_record(workdir, spec.image, spec.seed))
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
                     status="oom" if oom else "failed", note=f"{type(e).__name__}: {first}")
    a.result.write_text(json.dumps(dataclasses.asdict(res)) + "\n")
    return 0 if res.status != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
