"""Health alerts: rules over the stream of logged metrics that name the knob to turn.

Each GRPO step's metrics (a metrics.jsonl line: reward, format_rate, zero_signal_fraction,
completion_length, kl, entropy, top_answer_fraction, ...) go through `AlertMonitor.update`,
which returns the alerts that START at this step. A rule warns once per episode: it stays
quiet while its condition holds and re-arms when the condition clears. A metric a step does
not log is no evidence either way (the rule's state is kept); SFT steps are ignored.

    monitor = AlertMonitor(cfg.alerts, run_dir / "alerts.jsonl")
    for alert in monitor.update(metrics):
        print(f"warning: {alert.message}")

Two metrics the rules read come from the step's parsed answers (each task's `rollout_stats`
picks what applies to it); their pure functions are here too: `answer_stats` (one answer for
most images) and `detection_box_stats` (many low-confidence boxes). Pure: no torch.
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visualrft_lite.answers import normalize_label

if TYPE_CHECKING:
    from visualrft_lite.config import AlertsConfig


@dataclass(frozen=True)
class Alert:
    """One warning: the step it started at, the rule's name, and a message naming the fix."""

    step: int
    rule: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- metrics from answers


def answer_stats(answers: Sequence[str | None], group_size: int,
                 truths: Sequence[str | None] | None = None) -> dict[str, Any]:
    """How concentrated a step's answers are across its images; {} with fewer than 2 answered images.

    `answers` are the parsed answers of the step's completions, group-contiguous (image 0's
    `group_size` answers, then image 1's, ...), None where a completion has none (counts and
    letters may be ints or strings); `truths` the images' ground-truth labels, one per group.
    Answers are compared after `normalize_label`.
        top_answer_fraction  the fraction of answered images whose majority answer is the most
                             common majority answer: 1.0 when every image gets the same answer
        top_answer           that answer
        answer_diversity     distinct answers / answers, over all completions
        top_truth_fraction   the same fraction for the truths (when given): a batch whose
                             images share one label should get one answer

    >>> answer_stats(["cat", "cat", "cat", "dog"], 2, truths=["cat", "dog"])["top_answer_fraction"]
    1.0
    """
    if group_size < 1 or len(answers) % group_size:
        raise ValueError(f"{len(answers)} answers do not split into groups of {group_size}")
    groups = [answers[i : i + group_size] for i in range(0, len(answers), group_size)]
    if truths is not None and len(truths) != len(groups):
        raise ValueError(f"{len(truths)} truths for {len(groups)} groups; pass one truth per image")
    normalised = [[n for n in (normalize_label(str(a)) for a in g if a is not None) if n] for g in groups]
    majority = [Counter(g).most_common(1)[0][0] for g in normalised if g]
    if len(majority) < 2:
        return {}
    top, count = Counter(majority).most_common(1)[0]
    flat = [a for g in normalised for a in g]
    stats: dict[str, Any] = {"top_answer_fraction": count / len(majority), "top_answer": top,
                             "answer_diversity": len(set(flat)) / len(flat)}
    if truths is not None:
        labels = [normalize_label(str(t)) for t, g in zip(truths, normalised) if g and t is not None]
        if labels:
            stats["top_truth_fraction"] = Counter(labels).most_common(1)[0][1] / len(labels)
    return stats


def detection_box_stats(predictions: Sequence[Sequence[tuple[Any, float]]],
                        low_confidence: float = 0.3) -> dict[str, float]:
    """Box counts of a step's detection completions (each a `parse_prediction("detect", ...)` list).

        boxes_per_completion         mean number of boxes per completion
        low_confidence_box_fraction  fraction of all boxes with confidence < `low_confidence` (0 if none)

    >>> detection_box_stats([[((0, 0, 1, 1), 0.9)], [((0, 0, 1, 1), 0.1), ((1, 1, 2, 2), 0.0)]])
    {'boxes_per_completion': 1.5, 'low_confidence_box_fraction': 0.6666666666666666}
    """
    if not predictions:
        return {}
    confidences = [float(conf) for boxes in predictions for _, conf in boxes]
    low = sum(1 for c in confidences if c < low_confidence)
    return {"boxes_per_completion": len(confidences) / len(predictions),
            "low_confidence_box_fraction": low / len(confidences) if confidences else 0.0}


# ----------------------------------------------------------------------------- rules


def _value(metrics: dict[str, Any], key: str) -> float | None:
    """A finite number under `key`, else None (missing, non-numeric and NaN are no evidence)."""
    v = metrics.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


class Rule:
    """A condition over the metrics stream. `check` returns the message while the condition
    holds, "" while it does not, and None when this step carries no evidence."""

    name = "rule"

    def check(self, metrics: dict[str, Any]) -> str | None:
        raise NotImplementedError


class Streak(Rule):
    """`test` has held for `steps` logged steps in a row."""

    def __init__(self, name: str, keys: tuple[str, ...], test: Callable[..., bool], steps: int,
                 message: Callable[..., str]):
        self.name, self.keys, self.test, self.steps, self.message = name, keys, test, steps, message
        self.streak = 0

    def check(self, metrics: dict[str, Any]) -> str | None:
        values = [_value(metrics, k) for k in self.keys]
        if values[0] is None:
            return None
        self.streak = self.streak + 1 if self.test(*values) else 0
        return self.message(*values, self.streak) if self.streak >= self.steps else ""


class Collapse(Rule):
    """The mean of the last `window` values fell below `fraction` × the mean of the first `window`."""

    def __init__(self, name: str, key: str, fraction: float, window: int, message: Callable[[float, float], str]):
        self.name, self.key, self.fraction, self.window, self.message = name, key, fraction, window, message
        self.first: list[float] = []
        self.recent: deque[float] = deque(maxlen=window)

    def check(self, metrics: dict[str, Any]) -> str | None:
        v = _value(metrics, self.key)
        if v is None:
            return None
        if len(self.first) < self.window:
            self.first.append(v)
        self.recent.append(v)
        if len(self.first) < self.window:
            return ""
        baseline, recent = sum(self.first) / self.window, sum(self.recent) / len(self.recent)
        return self.message(recent, baseline) if baseline > 0 and recent < self.fraction * baseline else ""


class Jump(Rule):
    """A value above both `factor` × the mean of the previous `window` values and `minimum`."""

    def __init__(self, name: str, key: str, factor: float, minimum: float, window: int,
                 message: Callable[[float, float], str]):
        self.name, self.key, self.factor, self.minimum, self.message = name, key, factor, minimum, message
        self.previous: deque[float] = deque(maxlen=window)

    def check(self, metrics: dict[str, Any]) -> str | None:
        v = _value(metrics, self.key)
        if v is None:
            return None
        full = len(self.previous) == self.previous.maxlen
        mean = sum(self.previous) / len(self.previous) if self.previous else 0.0
        self.previous.append(v)
        return self.message(v, mean) if full and v > self.minimum and v > self.factor * mean else ""


def default_rules(cfg: AlertsConfig) -> list[Rule]:
    """The rules `cfg` turns on, each with its message and the knobs that address it."""
    rules: list[Rule] = []
    if cfg.format_zero_steps:
        rules.append(Streak(
            "format_zero", ("format_rate",), lambda v: v == 0.0, cfg.format_zero_steps,
            lambda v, n: f"format rate has been 0 for {n} steps: no completion is <think>...</think><answer>..."
                         "</answer>; check the prompt (data.prompt), raise rollout.max_completion_length if "
                         "answers are cut off, or warm up with train.sft_warmup"))
    if cfg.zero_signal_steps:
        rules.append(Streak(
            "zero_signal", ("zero_signal_fraction",), lambda v: v >= cfg.zero_signal_fraction, cfg.zero_signal_steps,
            lambda v, n: f"{v:.0%} of groups had equal rewards for {n} steps in a row, so they teach nothing "
                         "(all right: data too easy; all wrong: too hard); raise rollout.num_generations or "
                         "rollout.temperature, or set grpo.dynamic_sampling=true"))
    if cfg.length_collapse_fraction:
        rules.append(Collapse(
            "length_collapse", "completion_length", cfg.length_collapse_fraction, cfg.window,
            lambda now, base: f"completion length fell to {now:.0f} tokens from {base:.0f} at the start: the "
                              "reasoning is collapsing; raise grpo.beta or lower train.learning_rate"))
    if cfg.entropy_collapse_fraction:
        rules.append(Collapse(
            "entropy_collapse", "entropy", cfg.entropy_collapse_fraction, cfg.window,
            lambda now, base: f"token entropy fell to {now:.3g} from {base:.3g} at the start: sampling is nearly "
                              "deterministic and groups will tie; raise rollout.temperature, set "
                              "grpo.epsilon_high=0.28 (clip-higher) or lower train.learning_rate"))
    if cfg.kl_jump_factor:
        rules.append(Jump(
            "kl_jump", "kl", cfg.kl_jump_factor, cfg.kl_jump_min, cfg.window,
            lambda v, mean: f"KL jumped to {v:.3g} from a mean of {mean:.3g} over the previous {cfg.window} "
                            "steps; lower train.learning_rate or train.max_grad_norm, or raise grpo.beta"))
    if cfg.top_answer_steps:
        rules.append(Streak(
            "answer_collapse", ("top_answer_fraction", "top_truth_fraction"),
            lambda v, truth: v >= cfg.top_answer_fraction and (truth is None or truth < cfg.top_answer_fraction),
            cfg.top_answer_steps,
            lambda v, truth, n: f"one answer for {v:.0%} of different images for {n} steps in a row: the policy "
                                "ignores the image; lower train.learning_rate, raise grpo.beta, or balance the "
                                "classes in the data"))
    if cfg.low_confidence_steps:
        rules.append(Streak(
            "low_confidence_boxes", ("low_confidence_box_fraction", "boxes_per_completion"),
            lambda frac, boxes: frac >= cfg.low_confidence_fraction and (boxes or 0.0) >= cfg.min_boxes_per_completion,
            cfg.low_confidence_steps,
            lambda frac, boxes, n: f"detection completions carry {boxes or 0.0:.1f} boxes each, {frac:.0%} of "
                                   f"them with confidence < {cfg.low_confidence:g}, for {n} steps: the confidence "
                                   "reward pays 1 - c for every unmatched box; lower reward.weights.confidence"))
    return rules


class AlertMonitor:
    """Feeds each step's metrics to the rules; returns (and appends to `path`) the alerts that start."""

    def __init__(self, cfg: AlertsConfig | None = None, path: Path | None = None):
        from visualrft_lite.config import AlertsConfig

        self.cfg = cfg or AlertsConfig()
        self.path = Path(path) if path is not None else None
        self.rules = default_rules(self.cfg) if self.cfg.enabled else []
        self.active: set[str] = set()
        self.history: list[Alert] = []

    def update(self, metrics: dict[str, Any]) -> list[Alert]:
        if metrics.get("phase") == "sft":
            return []
        step = metrics.get("step")
        fired = []
        for rule in self.rules:
            message = rule.check(metrics)
            if message is None:
                continue
            if not message:
                self.active.discard(rule.name)
            elif rule.name not in self.active:
                self.active.add(rule.name)
                fired.append(Alert(int(step) if isinstance(step, int) else -1, rule.name, message))
        if fired and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(a.to_json()) + "\n" for a in fired)
        self.history.extend(fired)
        return fired
