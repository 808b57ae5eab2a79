"""The run configuration: one frozen, typed dataclass per section, and the whole `Config`.

A value is checked where its section is built (`__post_init__`): a `Literal` field against its
own choices, a field naming an extension point against its registry (`data.task` against the
tasks, `data.source` against the data sources, `train.optimizer`, `train.report_to`,
`grpo.loss_type`, `grpo.reward_aggregation`), ranges by hand. Nothing downstream writes into a
config: `resolve.with_model` and `resolve.resolve` return new ones. The life of a config:

    parse      YAML mapping -> Config (`files.config_from_dict`): types, keys, values
    resolve    Config + the checkpoint's family and processor -> Config (`resolve.resolve`):
               every model.* auto and the default LoRA targets become the checkpoint's values;
               what a run's config.yaml records, and what its eval/predict/merge reuse

Pure: imports neither torch nor transformers (registries that live next to heavier code are
imported when a value is checked).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from visualrft_lite.rewards import RewardOptions
from visualrft_lite.tasks import TASKS


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def check_choices(section: Any, prefix: str) -> None:
    """Every `Literal` field of a section holds one of its choices (the type is the one list)."""
    for f in dataclasses.fields(section):
        hint = get_type_hints(type(section))[f.name]
        if get_origin(hint) is Literal:
            choices = get_args(hint)
            value = getattr(section, f.name)
            _check(value in choices, f"{prefix}.{f.name} must be one of {', '.join(map(str, choices))}; got {value!r}")


class Section:
    """A config section: its choices checked from its type hints, then its own `check`."""

    prefix = ""

    def __post_init__(self) -> None:
        check_choices(self, self.prefix)
        self.check()

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class ModelConfig(Section):
    """Which model to load and how."""

    prefix = "model"

    name: str = "Qwen/Qwen2-VL-2B-Instruct"
    """Hub id or local directory; `vrft-lite/tiny-qwen2-vl` is the tiny local model
    (`vrft-lite/tiny-qwen2.5-vl`, `-qwen3-vl`, `-qwen3.5`: the other families' tiny models)."""
    quant: Literal["auto", "4bit", "8bit", "none"] = "auto"
    """Base weights: NF4 4-bit (double quantisation), int8, or unquantised (16-bit LoRA); auto =
    the family's: 4bit, but none for Qwen3.5 (QLoRA not advised for it). Resolved into config.yaml."""
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Compute dtype; auto = bf16 on CUDA, fp32 on CPU."""
    attn: Literal["auto", "eager", "sdpa", "flash_attention_2"] = "auto"
    """Attention kernel; auto = flash_attention_2 when flash-attn is importable on CUDA, else sdpa."""
    coords: Literal["auto", "rel1000", "pixel", "resized"] = "auto"
    """The model's box convention; auto = the checkpoint's (its config.json model_type):
    Qwen2-VL, Qwen3-VL, Qwen3.5 0-1000 relative (`rel1000`); Qwen2.5-VL absolute pixels of the
    resized image (`resized`). A run's config.yaml records the resolved value."""
    thinking: Literal["auto", "on", "off"] = "auto"
    """Does the prompt open <think>: auto = as the chat template does by default (Qwen3.5 and
    Thinking checkpoints: on); on / off ask a template with an enable_thinking switch (a warning
    when it has none). Resolved into config.yaml; YAML's bare on / off / true / false work."""
    min_pixels: int | Literal["auto"] = "auto"
    """Smallest image area after the processor's resize; auto = the checkpoint's own (Qwen2-VL
    3136 = 4·28·28, Qwen3-VL 65536 = 64·32·32). Resolved into config.yaml."""
    max_pixels: int | Literal["auto"] = "auto"
    """Largest image area after resize; auto = the checkpoint's own (Qwen2-VL 12845056, Qwen3-VL
    16777216). The paper's budget is 401408 = 512·28·28 (392·32·32 for patch-16 families)."""
    gradient_checkpointing: bool = True
    """Recompute activations in backward (non-reentrant): less memory, ~30% more compute."""
    device: str = "auto"
    """auto = cuda when available, else cpu."""

    def check(self) -> None:
        for key in ("min_pixels", "max_pixels"):
            v = getattr(self, key)
            _check(v == "auto" or (type(v) is int and v > 0),
                   f"model.{key} must be a positive integer or auto; got {v!r}")
        low, high = self.min_pixels, self.max_pixels
        _check("auto" in (low, high) or low <= high, "need model.min_pixels <= model.max_pixels")  # type: ignore[operator]


@dataclass(frozen=True)
class LoraConfig(Section):
    """LoRA adapters on the language model's linear layers."""

    prefix = "lora"

    r: int = 64
    """Adapter rank."""
    alpha: int = 128
    """Scaling numerator: the update is (alpha / r) · B·A."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Linear layer names inside the language model that get adapters; the default set means
    every attention-like and MLP layer of the model's family (resolved into config.yaml)."""
    train_vision: bool = False
    """Also put adapters on the vision tower (frozen by default)."""

    def check(self) -> None:
        _check(self.r > 0, "lora.r must be > 0")
        _check(self.alpha > 0, "lora.alpha must be > 0")
        _check(0.0 <= self.dropout < 1.0, "lora.dropout must be in [0, 1)")
        _check(len(self.target_modules) > 0, "lora.target_modules must name at least one layer")


@dataclass(frozen=True)
class DataConfig(Section):
    """Where the records come from. Every source yields the same `Record` type."""

    prefix = "data"
    source: str = "synthetic"
    """A registered data source (`vrft-lite list sources`): hub (Visual-RFT parquet), folder,
    coco, jsonl, synthetic, the official releases (flowers102, oxford_pets, fgvc_aircraft,
    stanford_cars), reasonseg. A path whose contents say otherwise (a parquet folder, an
    official layout) is read as what it is."""
    path: str = ""
    """Training data: hub id, parquet file or directory; folder root; COCO json or COCO folder;
    jsonl file; an official dataset's folder (or its parent; downloaded there with `download`)."""
    eval_path: str | None = None
    """Held-out data (None: the source's own test split: test/, val/ or valid/ folders, the
    official test list, the val json next to a COCO train json)."""
    image_root: str | None = None
    """COCO/jsonl: directory image file names are relative to (default: found next to the json)."""
    eval_image_root: str | None = None
    """COCO: images of the eval json (default: derived from its split name, e.g. val2017/)."""
    label_names: str | None = None
    """Class folders: a JSON file mapping folder names to class names (default: a
    cat_to_name.json next to the splits, if any)."""
    download: bool = False
    """Official classification sources: download the dataset into data.path when it is missing."""
    task: str = "classify"
    """A registered task (`vrft-lite list tasks`): its prompt, reward and metrics."""
    shots: int | None = None
    """k images per class (folder) or per category (coco), sampled with `seed`; None = all."""
    categories: list[str] | None = None
    """COCO/LVIS category names, or a subset of folder classes; None = all."""
    eval_categories: list[str] | None = None
    """Categories of the held-out split when they differ (open vocabulary); None = `categories`."""
    negatives: int = 0
    """COCO: images without the category added per category ('No Objects' answers)."""
    kind: str = "object"
    """Classification prompt noun: plant, pet, aircraft, car, ..."""
    attribute: str = "category"
    """Classification prompt attribute: species, model, category, ..."""
    prompt: str | None = None
    """Override the prompt: a template name from prompts.TEMPLATES (e.g. classify_labels) or a
    str.format string (fields: category, kind, attribute, query, labels, options, a_kind, a_category)."""
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    """Extra accepted names per label for the classification reward."""
    seed: int = 0
    """Seed for k-shot sampling."""
    limit: int | None = None
    """Keep at most this many records (debugging)."""

    def categories_for(self, split: str) -> tuple[str, list[str] | None]:
        """(the setting, its categories) that select a split's records: data.eval_categories
        for the held-out split when set (open vocabulary), else data.categories."""
        if split == "eval" and self.eval_categories is not None:
            return "data.eval_categories", self.eval_categories
        return "data.categories", self.categories

    def check(self) -> None:
        from visualrft_lite.data.sources import SOURCES

        SOURCES.check(self.source, "data.source")
        TASKS.check(self.task, "data.task")
        _check(self.shots is None or self.shots > 0, "data.shots must be > 0 or null")
        _check(self.negatives >= 0, "data.negatives must be >= 0")
        _check(self.limit is None or self.limit > 0, "data.limit must be > 0 or null")


@dataclass(frozen=True)
class RolloutConfig(Section):
    """Sampling the group of completions. Every sampling parameter is passed explicitly:
    the checkpoint's generation_config.json (near-greedy for Qwen2-VL) never leaks in."""

    prefix = "rollout"

    num_generations: int = 8
    """G: completions per prompt (8 for 2B, 4 for 7B in the paper)."""
    max_completion_length: int = 256
    """Tokens sampled per completion at most."""
    min_completion_length: int = 0
    """Force at least this many tokens (benchmarks on random weights)."""
    max_prompt_length: int = 1024
    """Prompts longer than this (text + image tokens) are an error."""
    temperature: float = 1.0
    """Sampling temperature (also applied to the training log-probs)."""
    top_p: float = 1.0
    """Nucleus sampling; 1.0 = off."""
    top_k: int = 0
    """Top-k sampling; 0 = off."""
    repetition_penalty: float = 1.0
    """1.0 = off."""
    max_batch_rows: int = 64
    """Completions decoded together at most (all prompts of a step share one batch up to this).
    The KV cache grows with rows x (prompt + completion tokens): about 28 KB per token per row
    for Qwen2-VL-2B in bf16 (28 layers x 2 KV heads x 128 x 2 x 2 bytes), so 64 rows of
    ~1300 tokens take ~2.3 GB. Lower it if the rollout runs out of memory; a step's P x G rows
    above the cap decode in several rounds."""

    def check(self) -> None:
        _check(self.num_generations >= 2, "rollout.num_generations must be >= 2 (GRPO compares a group)")
        _check(self.max_batch_rows >= 1, "rollout.max_batch_rows must be >= 1")
        _check(self.max_completion_length > 0, "rollout.max_completion_length must be > 0")
        _check(
            0 <= self.min_completion_length <= self.max_completion_length,
            "need 0 <= rollout.min_completion_length <= rollout.max_completion_length",
        )
        _check(self.temperature > 0, "rollout.temperature must be > 0")
        _check(0 < self.top_p <= 1, "rollout.top_p must be in (0, 1]")
        _check(self.top_k >= 0, "rollout.top_k must be >= 0")
        _check(self.repetition_penalty > 0, "rollout.repetition_penalty must be > 0")


@dataclass(frozen=True)
class GRPOConfig(Section):
    """The policy-gradient objective."""

    prefix = "grpo"

    beta: float = 0.04
    """KL weight (k3 estimator) to the adapters-disabled reference; 0 skips the reference pass."""
    loss_type: str = "grpo"
    """grpo: per-sequence mean then batch mean (the paper); dapo: token mean over the batch;
    dr_grpo: token sum / (batch · max_completion_length)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide advantages by the group's std, the batch's std, or not at all."""
    num_iterations: int = 1
    """Updates per rollout; > 1 uses PPO-style ratio clipping."""
    epsilon_low: float = 0.2
    """Lower clip range of the token probability ratio."""
    epsilon_high: float = 0.2
    """Upper clip range of the token probability ratio; DAPO's clip-higher (Yu et al. 2025) is
    0.28 with epsilon_low 0.2, leaving room for unlikely tokens to gain probability."""
    importance_sampling: Literal["token", "sequence"] = "token"
    """token: one ratio per token (GRPO/PPO); sequence: GSPO's (Zheng et al. 2025) one
    length-normalised ratio per completion, exp(mean over its tokens of logp − old_logp),
    clipped with sequence_epsilon_low/high. Matters only off-policy (num_iterations > 1)."""
    sequence_epsilon_low: float = 3e-4
    """Lower clip range of the sequence ratio (GSPO paper: 3e-4)."""
    sequence_epsilon_high: float = 4e-4
    """Upper clip range of the sequence ratio (GSPO paper: 4e-4)."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards all tie (no signal) and sample more prompts in their place."""
    max_sampling_draws: int = 3
    """dynamic_sampling: rollout rounds per step at most (the first included); if the batch is
    still short after them, the step trains on the groups it has."""
    mask_truncated: bool = False
    """DAPO's overlong filtering: completions that reach rollout.max_completion_length without
    an end token add no loss (their rewards still count in their group's advantages)."""
    reward_aggregation: str = "sum"
    """sum: advantages from the weighted sum of the reward components (the paper);
    normalize_then_sum: each component z-scored within its group first, then summed with
    reward.weights (GDPO, Liu et al. 2026), so a widely spread component cannot drown a rare one."""

    def check(self) -> None:
        from visualrft_lite.objectives import LOSS_TYPES, REWARD_AGGREGATIONS

        _check(self.beta >= 0, "grpo.beta must be >= 0")
        LOSS_TYPES.check(self.loss_type, "grpo.loss_type")
        REWARD_AGGREGATIONS.check(self.reward_aggregation, "grpo.reward_aggregation")
        _check(self.num_iterations >= 1, "grpo.num_iterations must be >= 1")
        _check(self.epsilon_low >= 0 and self.epsilon_high >= 0, "grpo.epsilon_low/high must be >= 0")
        _check(0 <= self.sequence_epsilon_low < 1 and self.sequence_epsilon_high >= 0,
               "need 0 <= grpo.sequence_epsilon_low < 1 and grpo.sequence_epsilon_high >= 0")
        _check(self.max_sampling_draws >= 1, "grpo.max_sampling_draws must be >= 1")

    def clip_epsilons(self) -> tuple[float, float]:
        """(epsilon_low, epsilon_high) for grpo_loss at this importance-sampling level."""
        if self.importance_sampling == "sequence":
            return self.sequence_epsilon_low, self.sequence_epsilon_high
        return self.epsilon_low, self.epsilon_high


@dataclass(frozen=True)
class TrainConfig(Section):
    """The optimisation loop."""

    prefix = "train"

    steps: int = 200
    """Optimizer steps."""
    prompts_per_step: int = 2
    """Prompts (images) per optimizer step; each gets num_generations completions."""
    micro_batch_size: int = 4
    """Completions per forward/backward; gradients accumulate over the rest."""
    learning_rate: float = 1e-5
    """Peak learning rate of the adapters."""
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    """After warm-up: constant, cosine decay or linear decay to 0."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    optimizer: str = "adamw"
    """A registered optimizer (`vrft-lite list optimizers`); paged_adamw_8bit needs CUDA and bitsandbytes."""
    seed: int = 0
    """Seeds Python, NumPy, torch and sampling."""
    save_every: int = 50
    """Checkpoint every N steps (0 = only at the end)."""
    samples_every: int = 10
    """Write a few completions to samples.jsonl every N steps."""
    max_nonfinite: int = 5
    """Stop after this many non-finite losses in a row."""
    sft_warmup: int = 0
    """Supervised steps on the answers before GRPO (Reason-RFT's first phase)."""
    sft_learning_rate: float = 1e-4
    """Learning rate of the supervised warm-up / `vrft-lite sft`."""
    sft_batch_size: int = 4
    """Records per supervised step."""
    report_to: str = "none"
    """Also send every metrics.jsonl number and every alert to TensorBoard (run_dir/tensorboard/)
    or Weights & Biases (`WANDB_MODE=offline` works without an account); needs
    `pip install 'vrft-lite[tensorboard]'` or `'vrft-lite[wandb]'`."""
    wandb_project: str = "vrft-lite"
    """report_to=wandb: the W&B project the run is logged under."""

    def check(self) -> None:
        from visualrft_lite.optim import OPTIMIZERS
        from visualrft_lite.trackers import TRACKERS

        _check(self.steps >= 0, "train.steps must be >= 0")
        _check(self.prompts_per_step >= 1, "train.prompts_per_step must be >= 1")
        _check(self.micro_batch_size >= 1, "train.micro_batch_size must be >= 1")
        _check(self.learning_rate > 0, "train.learning_rate must be > 0")
        _check(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        _check(self.max_grad_norm >= 0, "train.max_grad_norm must be >= 0")
        OPTIMIZERS.check(self.optimizer, "train.optimizer")
        _check(self.save_every >= 0 and self.samples_every >= 0, "train.save_every/samples_every must be >= 0")
        _check(self.max_nonfinite >= 1, "train.max_nonfinite must be >= 1")
        _check(self.sft_warmup >= 0, "train.sft_warmup must be >= 0")
        _check(self.sft_learning_rate > 0, "train.sft_learning_rate must be > 0")
        _check(self.sft_batch_size >= 1, "train.sft_batch_size must be >= 1")
        TRACKERS.check(self.report_to, "train.report_to")


@dataclass(frozen=True)
class EvalConfig(Section):
    """`vrft-lite eval` and the held-out numbers a run prints."""

    prefix = "eval"

    batch_size: int = 8
    """Prompts per generate call."""
    max_new_tokens: int = 256
    """Greedy completion length at most."""
    limit: int | None = None
    """Evaluate at most this many records."""
    two_stage: bool = False
    """Detection: ask whether the category is present first, boxes only where it is (the paper)."""
    heldout: int = 0
    """`train`: score this many held-out records (greedy) before training, after the SFT warm-up
    and at the end, and print the before/after table; 0 = off."""

    def check(self) -> None:
        _check(self.batch_size >= 1, "eval.batch_size must be >= 1")
        _check(self.max_new_tokens >= 1, "eval.max_new_tokens must be >= 1")
        _check(self.limit is None or self.limit > 0, "eval.limit must be > 0 or null")
        _check(self.heldout >= 0, "eval.heldout must be >= 0")


@dataclass(frozen=True)
class AlertsConfig(Section):
    """Health warnings on each GRPO step's metrics: printed as `warning: ...`, appended to
    alerts.jsonl and marked on curves.png. A rule warns once when its condition starts and
    again only after the condition has cleared. A rule whose steps or fraction is 0 is off."""

    enabled: bool = True
    """Watch the metrics at all."""
    format_zero_steps: int = 10
    """Warn when format_rate has been 0 for this many steps in a row."""
    zero_signal_fraction: float = 1.0
    """Warn when at least this fraction of the step's groups tie (all rewards equal) ..."""
    zero_signal_steps: int = 3
    """... for this many steps in a row."""
    window: int = 5
    """Steps averaged for the baseline (the first ones) and the recent mean of the length,
    entropy and KL rules."""
    length_collapse_fraction: float = 0.3
    """Warn when the recent mean completion length falls below this fraction of its baseline."""
    entropy_collapse_fraction: float = 0.1
    """Warn when the recent mean token entropy falls below this fraction of its baseline."""
    kl_jump_factor: float = 5.0
    """Warn when KL exceeds this multiple of its mean over the previous `window` steps ..."""
    kl_jump_min: float = 0.1
    """... and is above this value (a KL near 0 can jump many-fold harmlessly)."""
    top_answer_fraction: float = 0.9
    """Warn when at least this fraction of a step's images get the same (majority) answer while
    their truths differ ..."""
    top_answer_steps: int = 5
    """... for this many steps in a row."""
    low_confidence: float = 0.3
    """detect: a predicted box below this confidence counts as low-confidence."""
    low_confidence_fraction: float = 0.5
    """detect: warn when at least this fraction of predicted boxes are low-confidence ..."""
    min_boxes_per_completion: float = 3.0
    """... with at least this many boxes per completion on average ..."""
    low_confidence_steps: int = 5
    """... for this many steps in a row."""

    prefix = "alerts"

    def check(self) -> None:
        for name in ("format_zero_steps", "zero_signal_steps", "top_answer_steps", "low_confidence_steps"):
            _check(getattr(self, name) >= 0, f"alerts.{name} must be >= 0")
        _check(self.window >= 1, "alerts.window must be >= 1")
        for name in ("zero_signal_fraction", "length_collapse_fraction", "entropy_collapse_fraction",
                     "top_answer_fraction", "low_confidence", "low_confidence_fraction"):
            _check(0 <= getattr(self, name) <= 1, f"alerts.{name} must be in [0, 1]")
        _check(self.kl_jump_factor >= 0 and self.kl_jump_min >= 0, "alerts.kl_jump_factor/kl_jump_min must be >= 0")
        _check(self.min_boxes_per_completion >= 0, "alerts.min_boxes_per_completion must be >= 0")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "lora": LoraConfig,
    "data": DataConfig,
    "rollout": RolloutConfig,
    "grpo": GRPOConfig,
    "reward": RewardOptions,
    "train": TrainConfig,
    "eval": EvalConfig,
    "alerts": AlertsConfig,
}


@dataclass(frozen=True)
class Config:
    """A whole run: its name, a one-line description, the plugin files it needs, one object per section.

    `reward.coords` is always `model.coords` (the model's box convention drives prompts, SFT
    targets and rewards alike): `files.config_from_dict` and `with_model` keep them together.
    """

    name: str = "custom"
    description: str = ""
    plugins: tuple[str, ...] = ()
    """Plugin files (absolute paths) whose tasks and rewards the run uses; loaded before parsing."""
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    reward: RewardOptions = field(default_factory=lambda: RewardOptions(coords=ModelConfig().coords))
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def __post_init__(self) -> None:
        if self.reward.coords != self.model.coords:
            raise ValueError(f"reward.coords={self.reward.coords} disagrees with model.coords={self.model.coords}; "
                             f"set model.coords only")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["plugins"] = list(self.plugins)
        if not self.plugins:
            del data["plugins"]
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
