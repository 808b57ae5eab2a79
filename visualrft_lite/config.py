"""Run configuration: one typed dataclass per section, loaded from a YAML preset.

A preset is a YAML file whose top-level keys are `name`, `description` and the sections
below. Unknown keys are errors naming the key, the section and the file; values are
validated in each section's `__post_init__`. `--set section.key=value` overrides are
parsed as YAML scalars and go through the same validation. The resolved config is
written to every run directory (`config.yaml`) so a run can be reproduced from it.

Pure: imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from visualrft_lite.data.records import TASKS
from visualrft_lite.errors import UserError, did_you_mean
from visualrft_lite.rewards import RewardOptions


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass
class ModelConfig:
    """Which model to load and how."""

    name: str = "Qwen/Qwen2-VL-2B-Instruct"
    """Hub id or local directory; `vrft-lite/tiny-qwen2-vl` is the tiny local model
    (`vrft-lite/tiny-qwen2.5-vl`, `-qwen3-vl`, `-qwen3.5`: the other families' tiny models)."""
    quant: Literal["4bit", "8bit", "none"] = "4bit"
    """Base weights: NF4 4-bit (double quantisation), int8, or unquantised."""
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Compute dtype; auto = bf16 on CUDA, fp32 on CPU."""
    attn: Literal["auto", "eager", "sdpa", "flash_attention_2"] = "auto"
    """Attention kernel; auto = flash_attention_2 when flash-attn is importable on CUDA, else sdpa."""
    coords: Literal["auto", "rel1000", "pixel", "resized"] = "auto"
    """The model's box convention; auto = the checkpoint's (its config.json model_type):
    Qwen2-VL, Qwen3-VL, Qwen3.5 0-1000 relative (`rel1000`); Qwen2.5-VL absolute pixels of the
    resized image (`resized`). A run's config.yaml records the resolved value."""
    thinking: Literal["auto", "on", "off"] = "auto"
    """Chat template's thinking mode (enable_thinking): auto = the template's default (Qwen3.5
    opens <think> in the generation prompt); on / off pass enable_thinking=True / False."""
    min_pixels: int = 3136
    """Smallest image area after the processor's resize (3136 = 4·28·28, the paper's)."""
    max_pixels: int = 401408
    """Largest image area after resize (401408 = 512·28·28, the paper's)."""
    gradient_checkpointing: bool = True
    """Recompute activations in backward (non-reentrant): less memory, ~30% more compute."""
    device: str = "auto"
    """auto = cuda when available, else cpu."""

    def __post_init__(self) -> None:
        _choice(self.quant, "model.quant", ("4bit", "8bit", "none"))
        _choice(self.dtype, "model.dtype", ("auto", "bf16", "fp16", "fp32"))
        _choice(self.attn, "model.attn", ("auto", "eager", "sdpa", "flash_attention_2"))
        _choice(self.coords, "model.coords", ("auto", "rel1000", "pixel", "resized"))
        _choice(self.thinking, "model.thinking", ("auto", "on", "off"))
        _check(0 < self.min_pixels <= self.max_pixels, "need 0 < model.min_pixels <= model.max_pixels")


@dataclass
class LoraConfig:
    """LoRA adapters on the language model's linear layers."""

    r: int = 64
    """Adapter rank."""
    alpha: int = 128
    """Scaling numerator: the update is (alpha / r) · B·A."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Linear layer names inside the language model that get adapters."""
    train_vision: bool = False
    """Also put adapters on the vision tower (frozen by default)."""

    def __post_init__(self) -> None:
        _check(self.r > 0, "lora.r must be > 0")
        _check(self.alpha > 0, "lora.alpha must be > 0")
        _check(0.0 <= self.dropout < 1.0, "lora.dropout must be in [0, 1)")
        _check(len(self.target_modules) > 0, "lora.target_modules must name at least one layer")


@dataclass
class DataConfig:
    """Where the records come from. Every source yields the same `Record` type."""

    source: Literal["hub", "folder", "coco", "jsonl", "synthetic", "flowers102", "oxford_pets", "fgvc_aircraft",
                    "stanford_cars", "reasonseg"] = "synthetic"
    """hub: Visual-RFT parquet/save_to_disk data; folder: class-per-folder images;
    coco: COCO/LVIS instance JSON; jsonl: your own records; synthetic: generated shapes;
    flowers102, oxford_pets, fgvc_aircraft, stanford_cars: the official releases (torchvision's
    layouts, class names and splits); reasonseg: LISA's per-image JSON (or Visual-RFT's lisa_train.json).
    A path whose contents say otherwise (a parquet folder, an official layout) is read as what it is."""
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
    task: Literal["classify", "detect", "ground", "count", "choice", "point"] = "classify"
    """Which reward scores the records."""
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

    def __post_init__(self) -> None:
        _choice(self.source, "data.source", ("hub", "folder", "coco", "jsonl", "synthetic", "flowers102", "oxford_pets",
                                             "fgvc_aircraft", "stanford_cars", "reasonseg"))
        _choice(self.task, "data.task", TASKS)
        _check(self.shots is None or self.shots > 0, "data.shots must be > 0 or null")
        _check(self.negatives >= 0, "data.negatives must be >= 0")
        _check(self.limit is None or self.limit > 0, "data.limit must be > 0 or null")


@dataclass
class RolloutConfig:
    """Sampling the group of completions. Every sampling parameter is passed explicitly:
    the checkpoint's generation_config.json (near-greedy for Qwen2-VL) never leaks in."""

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

    def __post_init__(self) -> None:
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


@dataclass
class GRPOConfig:
    """The policy-gradient objective."""

    beta: float = 0.04
    """KL weight (k3 estimator) to the adapters-disabled reference; 0 skips the reference pass."""
    loss_type: Literal["grpo", "dapo", "dr_grpo"] = "grpo"
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
    reward_aggregation: Literal["sum", "normalize_then_sum"] = "sum"
    """sum: advantages from the weighted sum of the reward components (the paper);
    normalize_then_sum: each component z-scored within its group first, then summed with
    reward.weights (GDPO, Liu et al. 2026), so a widely spread component cannot drown a rare one."""

    def __post_init__(self) -> None:
        _check(self.beta >= 0, "grpo.beta must be >= 0")
        _choice(self.loss_type, "grpo.loss_type", ("grpo", "dapo", "dr_grpo"))
        _choice(self.scale_rewards, "grpo.scale_rewards", ("group", "batch", "none"))
        _check(self.num_iterations >= 1, "grpo.num_iterations must be >= 1")
        _check(self.epsilon_low >= 0 and self.epsilon_high >= 0, "grpo.epsilon_low/high must be >= 0")
        _choice(self.importance_sampling, "grpo.importance_sampling", ("token", "sequence"))
        _check(0 <= self.sequence_epsilon_low < 1 and self.sequence_epsilon_high >= 0,
               "need 0 <= grpo.sequence_epsilon_low < 1 and grpo.sequence_epsilon_high >= 0")
        _check(self.max_sampling_draws >= 1, "grpo.max_sampling_draws must be >= 1")
        _choice(self.reward_aggregation, "grpo.reward_aggregation", ("sum", "normalize_then_sum"))

    def clip_epsilons(self) -> tuple[float, float]:
        """(epsilon_low, epsilon_high) for grpo_loss at this importance-sampling level."""
        if self.importance_sampling == "sequence":
            return self.sequence_epsilon_low, self.sequence_epsilon_high
        return self.epsilon_low, self.epsilon_high


@dataclass
class TrainConfig:
    """The optimisation loop."""

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
    optimizer: Literal["adamw", "paged_adamw_8bit"] = "adamw"
    """paged_adamw_8bit needs CUDA and bitsandbytes."""
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
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    """Also send every metrics.jsonl number and every alert to TensorBoard (run_dir/tensorboard/)
    or Weights & Biases (`WANDB_MODE=offline` works without an account); needs
    `pip install 'vrft-lite[tensorboard]'` or `'vrft-lite[wandb]'`."""
    wandb_project: str = "vrft-lite"
    """report_to=wandb: the W&B project the run is logged under."""

    def __post_init__(self) -> None:
        _check(self.steps >= 0, "train.steps must be >= 0")
        _check(self.prompts_per_step >= 1, "train.prompts_per_step must be >= 1")
        _check(self.micro_batch_size >= 1, "train.micro_batch_size must be >= 1")
        _check(self.learning_rate > 0, "train.learning_rate must be > 0")
        _choice(self.lr_schedule, "train.lr_schedule", ("constant", "cosine", "linear"))
        _check(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        _check(self.max_grad_norm >= 0, "train.max_grad_norm must be >= 0")
        _choice(self.optimizer, "train.optimizer", ("adamw", "paged_adamw_8bit"))
        _check(self.save_every >= 0 and self.samples_every >= 0, "train.save_every/samples_every must be >= 0")
        _check(self.max_nonfinite >= 1, "train.max_nonfinite must be >= 1")
        _check(self.sft_warmup >= 0, "train.sft_warmup must be >= 0")
        _check(self.sft_learning_rate > 0, "train.sft_learning_rate must be > 0")
        _check(self.sft_batch_size >= 1, "train.sft_batch_size must be >= 1")
        _choice(self.report_to, "train.report_to", ("none", "tensorboard", "wandb"))


@dataclass
class EvalConfig:
    """`vrft-lite eval` and the held-out numbers a run prints."""

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

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "eval.batch_size must be >= 1")
        _check(self.max_new_tokens >= 1, "eval.max_new_tokens must be >= 1")
        _check(self.limit is None or self.limit > 0, "eval.limit must be > 0 or null")
        _check(self.heldout >= 0, "eval.heldout must be >= 0")


@dataclass
class AlertsConfig:
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

    def __post_init__(self) -> None:
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


@dataclass
class Config:
    """A whole run: its name, a one-line description, and one object per section."""

    name: str = "custom"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    reward: RewardOptions = field(default_factory=RewardOptions)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def __post_init__(self) -> None:
        # The box convention is the model's: one setting (model.coords) drives prompts, SFT
        # targets and rewards alike.
        if self.reward.coords != self.model.coords:
            if self.reward.coords != RewardOptions().coords:
                raise ValueError(f"reward.coords={self.reward.coords} disagrees with model.coords={self.model.coords}; "
                                 f"set model.coords only")
            self.reward = dataclasses.replace(self.reward, coords=self.model.coords)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------------------- presets


def presets_dir() -> Path:
    """The shipped presets: inside the installed package, or `presets/` of a checkout."""
    packaged = Path(str(resources.files("visualrft_lite"))) / "presets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def resolve_preset(name_or_path: str) -> Path:
    """A preset name (`flowers-1shot`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"preset file {name_or_path} not found")
        return path
    candidate = presets_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    hint = did_you_mean(name_or_path, preset_names(), n=3)
    raise UserError(f"preset {name_or_path!r} not found{hint} (vrft-lite presets list)")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"malformed YAML in {where}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise UserError(f"malformed YAML in {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a preset is a mapping of sections (model:, data:, ...), not {type(data).__name__}")
    return data


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a YAML value against a dataclass field's type hint (ints widen to floats)."""
    origin = get_origin(hint)
    args = get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        return value  # checked by __post_init__ with the list of choices
    if origin in (list,):
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value] if args else value
    if origin in (dict,):
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {value!r}")
        return value
    if args and type(None) in args:  # X | None
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        return _coerce(value, rest[0], where) if len(rest) == 1 else value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def _build_section(cls: type, values: dict[str, Any], section: str, source: str) -> Any:
    if not isinstance(values, dict):
        example = dataclasses.fields(cls)[0].name
        raise UserError(f"section {section!r} in {source} must be a mapping of keys "
                        f"(e.g. {section}: {{{example}: ...}}), got {type(values).__name__} {values!r:.60}")
    hints = get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            hint = did_you_mean(key, known, otherwise=f" (known: {', '.join(known)})")
            raise UserError(f"unknown key {key!r} in section {section!r} of {source}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key} in {source}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise UserError(f"{source}: {e}") from None


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Map a preset's mapping onto the typed sections; unknown keys are errors."""
    unknown = [k for k in data if k not in SECTIONS and k not in ("name", "description")]
    if unknown:
        hint = did_you_mean(unknown[0], SECTIONS, otherwise=f" (sections: {', '.join(SECTIONS)})")
        raise UserError(f"unknown section {unknown[0]!r} in {source}{hint}")
    # A missing or empty section (`train:`) means its defaults; any other non-mapping is an error.
    sections = {name: _build_section(cls, {} if data.get(name) is None else data[name], name, source)
                for name, cls in SECTIONS.items()}
    name = _coerce(data.get("name") if data.get("name") is not None else "custom", str, f"name in {source}")
    description = _coerce(data.get("description") or "", str, f"description in {source}")
    try:
        return Config(name=name, description=description, **sections)
    except ValueError as e:
        raise UserError(f"{source}: {e}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (value parsed as a YAML scalar/list) to a preset mapping."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise UserError(f"--set expects section.key=value, got {item!r} (e.g. --set train.steps=10)")
        section, _, name = key.strip().partition(".")
        if section not in SECTIONS:
            hint = did_you_mean(section, SECTIONS, otherwise=f" (sections: {', '.join(SECTIONS)})")
            raise UserError(f"--set {item}: unknown section {section!r}{hint}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        data.setdefault(section, {})
        if data[section] is None:
            data[section] = {}
        if not isinstance(data[section], dict):
            raise UserError(f"--set {item}: section {section!r} of the preset is {type(data[section]).__name__} "
                            f"{data[section]!r:.60}, not a mapping of keys; fix that section first")
        data[section][name] = value
    return data


def load_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The resolved config: a preset (name or path; None = all defaults) plus `--set` overrides."""
    if preset is None:
        data, source = {}, "<defaults>"
    else:
        path = resolve_preset(preset)
        data, source = read_yaml(path), str(path)
    if overrides:
        data = apply_overrides(data, list(overrides))
        source = f"{source} (with --set)"
    return config_from_dict(data, source)


def preset_description(path: Path) -> str:
    try:
        data = read_yaml(path)
    except UserError:
        return "(malformed)"
    return str(data.get("description", ""))
