"""classify: name the class of the object in the image (fine-grained species, models).

Truth: "label", {"label": ..., "synonyms": [...]}, [label, *synonyms] or "<answer>label</answer>"
-> the normalised accepted names, the label first. Answer: the normalised answer text. Reward:
`accuracy`. Metrics: accuracy, per-class accuracy and confusion counts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from visualrft_lite.answers import answer_or_text, normalize_label
from visualrft_lite.prompts import with_article, with_tail
from visualrft_lite.rewards import RewardOptions
from visualrft_lite.tasks.base import PromptField, Scored, Task, mean_of, register_task, task_reward

if TYPE_CHECKING:
    from visualrft_lite.answers import CoordMap
    from visualrft_lite.data.records import Record

NO_ANSWER = "(no answer)"
OTHER = "(other)"
"""Confusion columns for an unreadable answer and for a name that is no class of the split."""

QUESTION = "This is an image containing {a_kind}. Please identify the {attribute} of the {kind} based on the image.\n"


@register_task
class Classify(Task):
    """Name the class of the object (accuracy, per-class accuracy, confusion)"""

    name = "classify"
    solution_help = '"label" or {"label": ..., "synonyms": [...]}'
    label_answers = True
    templates = {
        "classify": with_tail(QUESTION, "species name"),
        # The paper's prompt does not list the classes; this one does (data.prompt: classify_labels).
        "classify_labels": with_tail(QUESTION + "Choose one of: {labels}.\n", "species name"),
    }
    fields = (
        PromptField("kind", "what the image contains (plant, pet, car)", data_default="kind", fallback="object"),
        PromptField("attribute", "what to name (species, model)", data_default="attribute", fallback="category"),
        PromptField("labels", "class names listed in the prompt", is_list=True),
    )

    def parse_truth(self, solution: Any, *, image_size: Sequence[float] | None = None) -> tuple[str, ...]:
        """
        >>> Classify().parse_truth({"label": "British_Shorthair", "synonyms": ["BSH"]})
        ('british shorthair', 'bsh')
        """
        what = "classify solution"
        if isinstance(solution, str):
            names = [answer_or_text(solution)]
        elif isinstance(solution, dict):
            unknown = set(solution) - {"label", "synonyms"}
            if unknown or "label" not in solution:
                raise ValueError(f"{what} is {{'label': ..., 'synonyms': [...]}}; got keys {sorted(solution)}")
            synonyms = solution.get("synonyms") or []
            if isinstance(synonyms, str) or not isinstance(synonyms, Sequence):
                raise ValueError(f"{what}: synonyms must be a list of strings; got {synonyms!r}")
            names = [solution["label"], *synonyms]
        elif isinstance(solution, Sequence) and solution:
            names = list(solution)
        else:
            raise ValueError(f"{what} must be a label string or {{'label': ..., 'synonyms': [...]}}; got {solution!r}")
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"{what}: labels and synonyms must be strings; got {names!r}")
        normalised = [normalize_label(n) for n in names]
        if not normalised[0]:
            raise ValueError(f"{what}: label {names[0]!r} is empty after normalisation")
        return tuple(dict.fromkeys(n for n in normalised if n))

    def record_solution(self, solution: Any, *, image_size: tuple[int, int], synonyms: dict[str, list[str]],
                        clip: Callable[..., Any]) -> dict[str, Any]:
        """{"label", "synonyms"}, with data.synonyms for the label added."""
        self.parse_truth(solution)  # validates; raises ValueError
        if isinstance(solution, str):
            label, extra = answer_or_text(solution), []
        elif isinstance(solution, dict):
            label, extra = solution["label"], list(solution.get("synonyms") or [])
        else:
            label, extra = solution[0], list(solution[1:])
        return {"label": label, "synonyms": extra + [s for s in synonyms.get(label, []) if s not in extra]}

    def parse_answer(self, answer: str | None, coord_map: CoordMap | None = None) -> str | None:
        return normalize_label(answer) if answer is not None else None

    def template_for(self, fields: dict[str, Any]) -> str | None:
        return "classify_labels" if fields.get("labels") else None

    def think(self, record: Record) -> str:
        f = record.fields
        return (f"The image shows {with_article(str(f.get('kind', 'object')))}; I compare its visible features "
                f"with the {f.get('attribute', 'category')} I know.")

    def sft_answer(self, record: Record, to_model_box: Callable[..., Any]) -> str:
        sol = record.solution
        return str(sol["label"] if isinstance(sol, dict) else sol)

    def truth_text(self, truth: tuple[str, ...]) -> str:
        return truth[0]

    def truth_label(self, record: Record) -> str:
        sol = record.solution
        return str(sol["label"] if isinstance(sol, dict) else sol)

    def group_counts(self, records: Sequence[Record]) -> tuple[str, dict[str, str]]:
        return "classes", {k: str(n) for k, n in Counter(self.truth_label(r) for r in records).items()}

    def metrics(self, scored: Sequence[Scored]) -> dict[str, Any]:
        """Accuracy (the reward's), per-class accuracy and confusion counts keyed by normalised label."""
        known = {name: s.truth[0] for s in scored for name in s.truth}  # any accepted name -> its class
        per_class: dict[str, list[float]] = defaultdict(list)
        confusion: dict[str, Counter[str]] = defaultdict(Counter)
        for s in scored:
            label = s.truth[0]
            correct = s.reward["accuracy"] if s.reward else 0.0
            per_class[label].append(correct)
            if correct == 1.0:
                column = label  # a synonym or a `contains` match counts as the class itself
            elif not s.parsed:
                column = NO_ANSWER
            else:
                column = known.get(s.parsed, OTHER)
            confusion[label][column] += 1
        return {
            "accuracy": mean_of(s.reward["accuracy"] if s.reward else 0.0 for s in scored),
            "per_class": {label: {"n": len(v), "accuracy": sum(v) / len(v)} for label, v in sorted(per_class.items())},
            "confusion": {label: dict(sorted(c.items())) for label, c in sorted(confusion.items())},
        }

    def metric_lines(self, metrics: dict[str, Any]) -> list[tuple[str, float | None] | str]:
        lines: list[tuple[str, float | None] | str] = [("accuracy", metrics["accuracy"])]
        per_class = metrics["per_class"]
        if len(per_class) > 1:
            worst = sorted(per_class.items(), key=lambda kv: kv[1]["accuracy"])[:5]
            lines += [(f"  {label[:20]} ({c['n']})", c["accuracy"]) for label, c in worst]
            if len(per_class) > len(worst):
                lines.append(f"  ({len(per_class) - len(worst)} more classes in metrics.json)")
        return lines



@task_reward("classify", "accuracy")
def classify_reward(answer: str | None, truth: tuple[str, ...], *, options: RewardOptions, **_: Any) -> float:
    """1 if the normalised answer is the label or a synonym (`contains`: has it as whole words).

    >>> classify_reward("British Shorthair", ("british shorthair",), options=RewardOptions())
    1.0
    >>> classify_reward("a", ("abyssinian",), options=RewardOptions(match="contains"))  # the loophole, closed
    0.0
    """
    said = normalize_label(answer) if answer else ""
    if not said:
        return 0.0
    if options.match == "exact":
        return 1.0 if said in truth else 0.0
    padded = f" {said} "
    return 1.0 if any(f" {name} " in padded for name in truth) else 0.0
