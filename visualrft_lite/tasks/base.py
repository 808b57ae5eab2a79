"""What a task is: everything one kind of question owns, in one object.

    prompt    its templates (`templates`, the first is the default) and the fields they name
              (`fields`: what `predict` asks for, what a dataset row may carry)
    truth     how its ground truth is read (`parse_truth`) and kept in a Record (`record_solution`)
    answer    how the answer block of a completion is read (`parse_answer`), in pixels of the
              original image where it holds coordinates (`coordinates = True`)
    reward    its components: pure functions of (answer, truth), registered with `task_reward`;
              `accuracy` names the one reported as the sampled groups' accuracy
    metrics   what `eval` reports (`metrics`, `headline`, `metric_lines`, `row`)
    sft       the supervised answer (`sft_answer`) and its reasoning line (`think`)
    display   predict's lines and JSON, samples' captions, data show's counts, and the drawings

Built-in tasks and plugins alike register with the same two decorators:

    @register_task
    class YesNo(Task):
        name = "yesno"
        templates = {"yesno": "{query} Answer yes or no.\\n..."}
        fields = (PromptField("query", "the question", required=True, example='"Is the door open?"'),)
        def parse_truth(self, solution, *, image_size=None): ...
        def parse_answer(self, answer, coord_map=None): ...

    @task_reward("yesno", "accuracy")
    def yesno_accuracy(answer, truth, **_):
        return 1.0 if answer == truth else 0.0

`@task_reward(TASK, NAME)` on a function of an existing task adds a component to it. A reward
function is called as fn(answer, truth, coord_map=..., options=..., completion=...) and returns
a float in [0, 1] (or, registered with several names, a dict of them). Pure: stdlib only (the
drawing methods import Pillow when they draw, the metrics their libraries when they compute).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from visualrft_lite.errors import UserError
from visualrft_lite.registry import Registry, where_defined

if TYPE_CHECKING:
    from PIL import Image

    from visualrft_lite.answers import Box, CoordMap
    from visualrft_lite.data.records import Record
    from visualrft_lite.rewards import RewardOptions

RewardFn = Callable[..., Any]


@dataclass(frozen=True)
class PromptField:
    """A value a task's template names, given by the dataset, `predict`'s options or the config."""

    name: str
    """The template field, and predict's option (--category, --query, --labels) or --field NAME=..."""
    help: str
    required: bool = False
    """predict refuses to run without it."""
    example: str = ""
    """Quoted in the message when a required field is missing."""
    data_default: str | None = None
    """The data.* key that fills it when a record or predict leaves it out (kind, attribute)."""
    fallback: str | None = None
    """The value when neither gives one."""
    is_list: bool = False
    """Comma-separated on the command line."""


@dataclass(frozen=True)
class Scored:
    """One evaluated record: its parsed truth, the parsed answer, the reward (None: not asked)."""

    record: Record
    truth: Any
    parsed: Any
    reward: dict[str, float] | None


@dataclass(frozen=True)
class Component:
    """A reward function and the component names it returns."""

    names: tuple[str, ...]
    fn: RewardFn
    where: str


class Task:
    """The base every task derives from; defaults fit a task whose answer is one short text."""

    name: ClassVar[str] = ""
    solution_help: ClassVar[str] = "the ground truth"
    """How a dataset row writes the ground truth, for help texts (Visual-RFT's <answer> strings too)."""
    templates: ClassVar[dict[str, str]] = {}
    """Template name -> str.format text; the first is the task's default prompt."""
    fields: ClassVar[tuple[PromptField, ...]] = ()
    coordinates: ClassVar[bool] = False
    """Truth and answers are in image coordinates: scoring needs the image size and the model's
    box convention (`CoordMap`)."""
    accuracy: ClassVar[str] = "accuracy"
    """The reward component reported as `accuracy` in metrics.jsonl (IoU for detection)."""
    headline: ClassVar[str] = "accuracy"
    """The metric `eval` and the held-out table lead with."""
    label_answers: ClassVar[bool] = False
    """Each answer is one label (a class, a count, a letter): the health alerts watch for one
    answer given to most images (`alerts.answer_stats`)."""
    gate_template: ClassVar[str | None] = None
    """A yes/no template asked first in the two-stage protocol (detection's "is there a ...?")."""

    def __init__(self) -> None:
        self.rewards: list[Component] = []

    # ------------------------------------------------------------------ truth and answers

    def parse_truth(self, solution: Any, *, image_size: Sequence[float] | None = None) -> Any:
        """Ground truth in every accepted form -> the task's one normalised form; ValueError otherwise."""
        raise NotImplementedError

    def record_solution(self, solution: Any, *, image_size: tuple[int, int], synonyms: dict[str, list[str]],
                        clip: Callable[[list[Box]], list[Box]]) -> Any:
        """The solution as a Record keeps it (`clip` drops or clips boxes outside the image).
        None: nothing usable is left (the record is skipped and counted)."""
        return self.parse_truth(solution, image_size=image_size)

    def parse_answer(self, answer: str | None, coord_map: CoordMap | None) -> Any:
        """The answer block as the reward reads it (None: no answer); never raises."""
        raise NotImplementedError

    # ------------------------------------------------------------------ reward

    @property
    def components(self) -> tuple[str, ...]:
        """Reward component names besides `format`, in registration order."""
        return tuple(name for c in self.rewards for name in c.names)

    def reward(self, answer: str | None, truth: Any, *, coord_map: CoordMap | None, options: RewardOptions,
               completion: str = "") -> dict[str, float]:
        """Every component of this task for one answer, as its functions return them (each should
        lie in [0, 1]; `rewards.score` clips whatever does not, NaN to 0)."""
        scores: dict[str, float] = {}
        for c in self.rewards:
            value = c.fn(answer, truth, coord_map=coord_map, options=options, completion=completion)
            if len(c.names) == 1 and not isinstance(value, dict):
                value = {c.names[0]: value}
            for name in c.names:
                scores[name] = float(value[name])
        return scores

    # ------------------------------------------------------------------ prompt and SFT

    def template_for(self, fields: dict[str, Any]) -> str | None:
        """A template name other than the default for these fields (None: the default)."""
        return None

    def think(self, record: Record) -> str:
        """The reasoning line of an SFT target when the record carries none (`fields["think"]`)."""
        return "I look at the image and answer."

    def sft_answer(self, record: Record, to_model_box: Callable[[Sequence[float]], list[int]]) -> str:
        """The answer block of a supervised target (`to_model_box`: a pixel box in the model's convention)."""
        return str(record.solution).strip()

    # ------------------------------------------------------------------ display

    def answer_json(self, parsed: Any) -> Any:
        """A parsed answer as JSON (predictions.jsonl, predict --json)."""
        return parsed

    def answer_text(self, parsed: Any) -> str:
        """A parsed answer in a few words (samples' captions)."""
        return "no answer" if parsed is None else str(parsed)

    def truth_text(self, truth: Any) -> str:
        """A parsed truth in a few words (samples' titles, drawings)."""
        return str(truth)

    def truth_label(self, record: Record) -> str:
        """What a record's ground truth says, in words (data show's captions)."""
        return str(record.solution)

    def describe(self, parsed: Any, fields: dict[str, Any]) -> list[str]:
        """predict's lines for a parsed answer."""
        return [f"  parsed: {parsed if parsed is not None else 'none'}"]

    def draw_label(self, fields: dict[str, Any]) -> str | None:
        """The text boxes are tagged with when predict draws an answer."""
        return fields.get("category") or fields.get("query")

    def group_counts(self, records: Sequence[Record]) -> tuple[str, dict[str, str]]:
        """How data show counts records: ('classes', {label: '12'}); ('images', {}) by default."""
        return "images", {}

    def draw_answer(self, image: Image.Image, parsed: Any, *, label: str | None = None,
                    colour: tuple[int, int, int] | None = None) -> Image.Image:
        """A copy of `image` with the parsed answer drawn (`colour`: every mark in it)."""
        from visualrft_lite.draw import TEXT_COLOUR, Canvas

        canvas = Canvas.of(image)
        canvas.corner(self.answer_text(parsed), colour or TEXT_COLOUR)
        return canvas.image

    def draw_truth(self, image: Image.Image, truth: Any, *, label: str | None = None,
                   colour: tuple[int, int, int] | None = None) -> Image.Image:
        """A copy of `image` with the parsed truth drawn: in `colour` under an answer drawn over it
        (samples), else in the palette, tagged with `label` (data show's contact sheet)."""
        from visualrft_lite.draw import TEXT_COLOUR, Canvas

        canvas = Canvas.of(image, line_divisor=200 if colour else 100)
        if colour:
            canvas.corner(f"truth: {self.truth_text(truth)}", colour, bottom=True)
        else:
            canvas.corner(label or self.truth_text(truth), TEXT_COLOUR)
        return canvas.image

    # ------------------------------------------------------------------ evaluation and health

    def metrics(self, scored: Sequence[Scored]) -> dict[str, Any]:
        """The metrics eval reports for one split (fractions); the headline is the mean of the
        `accuracy` component by default (an unasked record counts 0)."""
        return {self.headline: mean_of(s.reward[self.accuracy] if s.reward else 0.0 for s in scored)}

    def metric_lines(self, metrics: dict[str, Any]) -> list[tuple[str, float | None] | str]:
        """Rows of eval's table, headline first: (name, fraction), or a line of text."""
        return [(self.headline, metrics.get(self.headline))]

    def row(self, scored: Scored) -> dict[str, Any]:
        """Extra fields of one record's line in predictions.jsonl."""
        return {}

    def rollout_stats(self, parsed: Sequence[Any], truths: Sequence[Any], group_size: int, *,
                      low_confidence: float) -> dict[str, Any]:
        """Metrics of one step's parsed answers that the health alerts read (`parsed` group-contiguous,
        one truth per group)."""
        if not self.label_answers:
            return {}
        from visualrft_lite.alerts import answer_stats

        return answer_stats([None if a is None else str(a) for a in parsed], group_size,
                            truths=[self.truth_text(t) for t in truths])


class TargetBox(Task):
    """A task whose ground truth is one pixel box (grounding, pointing)."""

    coordinates = True

    def parse_truth(self, solution: Any, *, image_size: Sequence[float] | None = None) -> Box:
        """[x1, y1, x2, y2] in pixels, or a string holding one 0-1000 box ("<answer>(x1,y1),(x2,y2)</answer>")."""
        from visualrft_lite.answers import answer_or_text, parse_ground_box, rel1000_to_pixels, truth_box

        what = f"{self.name} solution"
        if isinstance(solution, str):
            box = parse_ground_box(answer_or_text(solution))
            if box is None:
                raise ValueError(f"{what}: no (x1,y1),(x2,y2) or [x1, y1, x2, y2] box in {solution[:200]!r}")
            return rel1000_to_pixels(box, image_size, what)
        return truth_box(solution, what)

    def record_solution(self, solution: Any, *, image_size: tuple[int, int], synonyms: dict[str, list[str]],
                        clip: Callable[[list[Box]], list[Box]]) -> Box | None:
        boxes = clip([self.parse_truth(solution, image_size=image_size)])
        return boxes[0] if boxes else None

    def truth_text(self, truth: Box) -> str:
        return "[" + ", ".join(f"{v:.0f}" for v in truth) + "]"

    def truth_label(self, record: Record) -> str:
        return str(record.fields.get("query", "target"))

    def draw_truth(self, image: Image.Image, truth: Box, *, label: str | None = None,
                   colour: tuple[int, int, int] | None = None) -> Image.Image:
        from visualrft_lite.draw import PALETTE, Canvas

        canvas = Canvas.of(image, line_divisor=200 if colour else 100)
        if colour:
            canvas.box(truth, colour, "truth", tag_at="bottom")
        else:
            canvas.box(truth, PALETTE[0], label or "target")
        return canvas.image


def mean_of(values: Any) -> float | None:
    """The mean of an iterable of numbers; None when it is empty."""
    values = list(values)
    return sum(values) / len(values) if values else None


TASKS: Registry[Task] = Registry("task", "data.task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register one instance of a Task subclass under its `name`."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"@register_task decorates a Task subclass; got {cls!r}")
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    if not cls.templates:
        raise ValueError(f"task {cls.name!r} needs `templates` (its default prompt first)")
    taken = {name: e.name for e in TASKS.entries() for name in e.value.templates}
    for name in cls.templates:
        if name in taken:
            raise UserError(f"template {name!r} of task {cls.name!r} is already task {taken[name]!r}'s; rename it")
    TASKS.add(cls.name, cls(), where=where_defined(cls))
    return cls


def task_reward(task: str, *names: str) -> Callable[[RewardFn], RewardFn]:
    """Register a reward function for `task` under component `names` (one, or several for a
    function returning a dict of them). Components are summed with reward.weights."""
    if not names:
        raise ValueError("task_reward needs at least one component name")

    def add(fn: RewardFn) -> RewardFn:
        target = get_task(task)
        where = where_defined(fn)
        for name in names:
            if name == "format" or name in target.components:
                raise UserError(f"reward component {name!r} of task {task!r} is already registered; choose another name")
        target.rewards.append(Component(tuple(names), fn, where))
        return fn

    return add


def get_task(name: str) -> Task:
    """The registered task; an UnknownName error naming the tasks otherwise."""
    return TASKS.get(name)


def task_names() -> tuple[str, ...]:
    return TASKS.names()


def all_components() -> tuple[str, ...]:
    """`format` and every registered task's components: the names reward.weights accepts."""
    return tuple(dict.fromkeys(["format", *(c for t in TASKS.entries() for c in t.value.components)]))
