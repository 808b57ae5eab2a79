"""Rendering a task's prompt template for a record, and the supervised target text for SFT.

Each task owns its templates (`visualrft_lite/tasks/`): the classification, detection and
grounding ones are Visual-RFT's (the released data uses them), kept byte-for-byte when
rendered with the default 0-1000 coordinates; the others follow the same think/answer
instruction (`with_tail`). Templates are `str.format` strings over a record's fields plus a
few derived ones:

    kind, attribute       classification noun and attribute ("aircraft", "model")
    a_kind, a_category    the same with an article ("an aircraft")
    category              detection / presence category name
    query                 grounding instruction, counting or multiple-choice question
    labels                all class names, comma-separated (for templates that list them)
    options               multiple-choice options as "A. first\\nB. second\\n" lines (or "")
    box_range, point_range  the coordinate convention in words

Answer extraction lives in `answers.py`; this module only writes text. Pure: no torch.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from visualrft_lite.answers import CoordMap, Coords
from visualrft_lite.data.records import Record
from visualrft_lite.errors import UserError

FORMAT_TAIL = (
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "The output answer format should be as follows:\n"
    "<think> ... </think> <answer>{answer_example}</answer>\n"
    "Please strictly follow the format."
)


def with_tail(question: str, answer_example: str) -> str:
    """A task template: the question, then the think/answer instruction with an example answer."""
    # The example itself may contain braces (detection's dict), so it is escaped here once.
    example = answer_example.replace("{", "{{").replace("}", "}}")
    return question + FORMAT_TAIL.replace("{answer_example}", example)


class _Templates(Mapping[str, str]):
    """Every registered task's named templates (read-only): `data.prompt` may name any of them."""

    def _all(self) -> dict[str, str]:
        from visualrft_lite.tasks import TASKS

        return {name: text for entry in TASKS.entries() for name, text in entry.value.templates.items()}

    def __getitem__(self, name: str) -> str:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


TEMPLATES: Mapping[str, str] = _Templates()
"""Template name -> text, over every registered task (classify, classify_labels, detect, presence, ...)."""

_BOX_RANGE = {
    "rel1000": "between 0 and 1000, integer",
    "pixel": "in pixels of the image, integer",
    "resized": "in pixels of the image, integer",
}
_POINT_RANGE = {
    "rel1000": "between 0 and 1000",
    "pixel": "in pixels of the image",
    "resized": "in pixels of the image",
}


def with_article(noun: str) -> str:
    """'aircraft' -> 'an aircraft', 'car' -> 'a car' (by first letter; good enough for class nouns)."""
    noun = noun.strip()
    return f"{'an' if noun[:1].lower() in 'aeiou' and noun[:1] else 'a'} {noun}"


def option_lines(options: Sequence[str]) -> str:
    """['cat', 'dog'] -> 'A. cat\\nB. dog'."""
    return "\n".join(f"{string.ascii_uppercase[i]}. {opt}" for i, opt in enumerate(options))


def resolve_template(template: str | None, task: str) -> str:
    """A template name from TEMPLATES, a literal format string, or None for the task's default."""
    if template is None:
        from visualrft_lite.tasks import get_task

        return next(iter(get_task(task).templates.values()))
    return TEMPLATES.get(template, template)


def template_fields(record: Record, coords: Coords = "rel1000") -> dict[str, Any]:
    """The values a template can name: the record's fields plus derived ones."""
    fields: dict[str, Any] = dict(record.fields)
    if "query" not in fields and "instruction" in fields:
        fields["query"] = fields["instruction"]
    if "kind" in fields:
        fields.setdefault("a_kind", with_article(str(fields["kind"])))
    if "category" in fields:
        fields.setdefault("a_category", with_article(str(fields["category"])))
    if isinstance(fields.get("labels"), (list, tuple)):
        fields["labels"] = ", ".join(str(x) for x in fields["labels"])
    options = fields.get("options") or ""
    if isinstance(options, (list, tuple)):
        options = option_lines([str(x) for x in options])
    fields["options"] = options.rstrip("\n") + "\n" if options else ""
    # `auto` is resolved from the checkpoint before a run renders a prompt; a preview without a
    # model (`data show`) words it as the default model's (Qwen2-VL, rel1000).
    known = coords if coords in _BOX_RANGE else "rel1000"
    fields.setdefault("box_range", _BOX_RANGE[known])
    fields.setdefault("point_range", _POINT_RANGE[known])
    return fields


def render_prompt(record: Record, template: str | None = None, coords: Coords = "rel1000") -> str:
    """The question text for a record.

    An explicit `template` (a TEMPLATES name or a format string) wins; else the record's own
    verbatim `prompt` (hub data); else the task's default template. A field the template names
    but the record lacks is a UserError naming the field.

    >>> render_prompt(Record("x.png", "count", 3, fields={"query": "How many cats?"})).splitlines()[0]
    'How many cats?'
    """
    if template is None and record.prompt is not None:
        return record.prompt
    text = resolve_template(template, record.task)
    fields = template_fields(record, coords)
    try:
        return text.format(**fields)
    except KeyError as e:
        have = ", ".join(sorted(k for k in record.fields)) or "none"
        raise UserError(
            f"prompt template needs field {e.args[0]!r} but the {record.task} record has none "
            f"(its fields: {have}); set it in the data or change data.prompt"
        ) from None
    except (IndexError, ValueError) as e:
        raise UserError(f"prompt template is not a valid format string ({e}); escape literal braces as {{{{ }}}} in data.prompt") from None


# ----------------------------------------------------------------------------- SFT targets


def to_model_box(box: Sequence[float], image_size: tuple[int, int], coords: Coords = "rel1000",
                 resized_size: tuple[int, int] | None = None) -> list[int]:
    """A pixel box in the model's integer convention: the inverse of `answers.CoordMap`, so the
    SFT target and the reward can never disagree on coordinates."""
    cmap = CoordMap.for_model(coords, image_size, resized_size)
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(x1 / cmap.sx), round(y1 / cmap.sy), round(x2 / cmap.sx), round(y2 / cmap.sy)]


def sft_target(record: Record, image_size: tuple[int, int] | None = None, coords: Coords = "rel1000",
               resized_size: tuple[int, int] | None = None) -> str:
    """The supervised completion `<think>…</think> <answer>…</answer>` for a record.

    Boxes go from pixels to the model's convention (`coords`); `image_size` is the original
    (width, height) the pixel boxes refer to (default: `record.image_size`). The reasoning is
    the record's own (`fields["think"]`) or the task's generic line.

    >>> sft_target(Record("x.png", "ground", [10, 20, 30, 40], fields={"query": "the cat"}), (100, 200))
    '<think>I find the region that the instruction refers to and locate it.</think> <answer>(100,100),(300,200)</answer>'
    """
    from visualrft_lite.tasks import get_task

    task = get_task(record.task)
    size = image_size or record.image_size
    if task.coordinates and size is None:
        raise ValueError("sft_target needs the image size to convert boxes")
    answer = task.sft_answer(record, lambda box: to_model_box(box, size, coords, resized_size))
    think = str(record.fields["think"]) if record.fields.get("think") else task.think(record)
    return f"<think>{think}</think> <answer>{answer}</answer>"


def after_prefix(prefix: str, text: str) -> str:
    """The part of a full completion `text` the model writes after the template's `prefix`.

    A template that opens the think block (Qwen3.5: "<think>\\n") leaves the model to write the
    reasoning on; one that closes an empty block (thinking off) leaves it only the answer.
    Scoring puts `prefix` back in front, so `prefix + after_prefix(prefix, t)` reads like `t`.

    >>> after_prefix("<think>\\n", "<think>I see a cat.</think> <answer>cat</answer>")
    'I see a cat.</think> <answer>cat</answer>'
    >>> after_prefix("<think>\\n\\n</think>\\n\\n", "<think>I see a cat.</think> <answer>cat</answer>")
    '<answer>cat</answer>'
    >>> after_prefix("", "<answer>cat</answer>")
    '<answer>cat</answer>'
    """
    opened = prefix.strip()
    if not opened:
        return text
    if "</think>" in opened:
        close = text.find("</think>")
        return text[close + len("</think>"):].lstrip() if close >= 0 else text
    if opened.endswith("<think>") and text.lstrip().startswith("<think>"):
        return text.lstrip()[len("<think>"):].lstrip()
    return text
