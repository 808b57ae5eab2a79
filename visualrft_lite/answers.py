"""Pulling the answer out of a completion, the parsers the tasks read answers with, and
mapping model coordinates to pixels. Pure: stdlib only.

Parsers of model output are total: they return None (or an empty list) for text they
cannot read and never raise, whatever the string holds. Parsed coordinates stay in the
model's convention; `CoordMap` turns them into pixels of the original image.
`parse_solution` is the other side: it reads ground truth (each task's `parse_truth`), and
raises ValueError on ground truth it cannot read, because a bad record is a data bug to fix,
not a zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, Literal

Box = tuple[float, float, float, float]
"""x1, y1, x2, y2."""
Point = tuple[float, float]
Coords = Literal["rel1000", "pixel", "resized"]
COORDS: tuple[str, ...] = ("rel1000", "pixel", "resized")
MAX_ITEMS = 100
"""Detection items or points read from one answer at most; the rest are ignored."""

# ----------------------------------------------------------------------------- the answer


def extract_answer(completion: str) -> str | None:
    """The stripped text of the first `<answer>…</answer>` after `</think>`; None if none.

    Everything before the first `</think>` is reasoning, and so is any later
    `<think>…</think>` block; an `<answer>` inside either is never returned. Without any
    `</think>` the first answer block counts. An `<answer>` without `</answer>` (a
    completion cut off by the token limit) is no answer.

    >>> extract_answer("<think>maybe <answer>cat</answer></think> <answer> dog </answer>")
    'dog'
    >>> extract_answer("<think>no closing tag <answer>cat</answer>")  # no </think>: the first block
    'cat'
    >>> extract_answer("<think>cat?</think><answer>cat") is None
    True
    """
    end = completion.find("</think>")
    pos = 0 if end < 0 else end + 8
    while True:
        start = completion.find("<answer>", pos)
        if start < 0:
            return None
        think = completion.find("<think>", pos, start)
        if think >= 0:
            close = completion.find("</think>", think)
            if close >= 0:  # the answer sits inside a later think block: skip the block
                pos = close + 8
                continue
        stop = completion.find("</answer>", start + 8)
        if stop < 0:
            return None
        return completion[start + 8 : stop].strip()


def answer_or_text(text: str) -> str:
    """Ground-truth strings come with or without `<answer>` tags."""
    answer = extract_answer(text) if "<answer>" in text else None
    return text.strip() if answer is None else answer


# ----------------------------------------------------------------------------- classify

_NOT_WORD = re.compile(r"[^\w\s]+")


def normalize_label(text: str) -> str:
    """Lower-case; `_` and `-` become spaces; other non-letters/digits dropped; spaces collapsed.

    >>> normalize_label("  British_Shorthair ")
    'british shorthair'
    >>> normalize_label("Bird-of-Paradise (Strelitzia)!")
    'bird of paradise strelitzia'
    """
    text = text.lower().replace("_", " ").replace("-", " ")
    return " ".join(_NOT_WORD.sub("", text).split())


# ----------------------------------------------------------------------------- numbers

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"


def _finite_float(text: str) -> float | None:
    """float(text) when it is a finite number; None for NaN, inf, overflow or junk."""
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------- detect

# An item is one `{...}` without nested braces. The first alternative reads a well-formed
# item (the prompt's key order, any case, either quote) in the same scan; its captures
# cannot contain braces, so both alternatives see exactly the same items. findall gives
# five strings per item, all "" for an item the first alternative could not read.
_ITEM = re.compile(
    r"""\{\s*["']position["']\s*:\s*\[([^,\]{}]*),([^,\]{}]*),([^,\]{}]*),([^,\]{}]*)\]\s*,"""
    r"""\s*["']confidence["']\s*:\s*([^,{}\]\s]+)\s*\}"""
    r"""|\{[^{}]*\}""",
    re.IGNORECASE,
)
_POSITION = re.compile(r"""(?<!\w)["']?position["']?\s*:\s*[\[(]([^\[\](){}]*)[\])]""", re.IGNORECASE)
_CONFIDENCE = re.compile(r"""(?<!\w)["']?confidence["']?\s*:\s*([^,{}\]\s]+)""", re.IGNORECASE)
_NO_OBJECTS = re.compile(r"\W*no\s+objects?\W*", re.IGNORECASE)
_EMPTY_LIST = re.compile(r"\s*(?:\[\s*)+(?:\]\s*)+")

Detection = tuple[Box | None, float]
"""A detection item as written: (box in model coordinates, confidence); box None = invalid."""


def _fast_item(x1: str, y1: str, x2: str, y2: str, conf: str) -> Detection:
    try:
        box = (float(x1), float(y1), float(x2), float(y2))
        c = float(conf)
    except (ValueError, OverflowError):
        return None, 0.0
    isfinite = math.isfinite
    if isfinite(box[0]) and isfinite(box[1]) and isfinite(box[2]) and isfinite(box[3]) and isfinite(c):
        return box, c
    return None, 0.0


def _slow_item(chunk: str) -> Detection:
    """Any key order, extra keys, tuples, missing confidence (= 1.0)."""
    position = _POSITION.search(chunk)
    if position is None:
        return None, 0.0
    values = [_finite_float(v) for v in position.group(1).split(",")]
    if len(values) != 4 or None in values:
        return None, 0.0
    confidence = _CONFIDENCE.search(chunk)
    c = 1.0 if confidence is None else _finite_float(confidence.group(1))
    if c is None:
        return None, 0.0
    return (values[0], values[1], values[2], values[3]), c  # type: ignore[return-value]


def parse_detections(answer: str) -> list[Detection] | None:
    """The items of a detection answer, in the order written.

    Returns [] for an explicit negative ("No Objects" in any case and punctuation, or an
    empty list) and None for text that is not a detection answer at all, so that an
    unreadable answer never passes for "no objects". Each `{...}` is one item; a list
    cut off mid-item keeps its complete items; `[[...]]` wrapping is fine; at most
    `MAX_ITEMS` items are read. An item whose position is not four finite numbers, or
    whose confidence is present but not a finite number, comes back as (None, 0.0).

    >>> parse_detections("[{'Position': [1, 2, 30, 40], 'Confidence': 0.9}, {'Position': [5, 6")
    [((1.0, 2.0, 30.0, 40.0), 0.9)]
    >>> parse_detections('[{"position": [1, 2, 3, NaN]}]'), parse_detections("No objects."), parse_detections("two")
    ([(None, 0.0)], [], None)
    """
    items = _ITEM.findall(answer)  # [(x1, y1, x2, y2, conf)], ("", "", "", "", "") when not well-formed
    if not items:
        if _NO_OBJECTS.fullmatch(answer) or (
            _EMPTY_LIST.fullmatch(answer) and answer.count("[") == answer.count("]")
        ):
            return []
        return None
    del items[MAX_ITEMS:]
    try:  # the common case in bulk: every item well-formed (else float("") raises) and finite
        values = list(map(float, chain.from_iterable(items)))
        total = sum(values)
        if total - total == 0.0:  # NaN when any value is NaN or inf
            it = iter(values)
            return [((x1, y1, x2, y2), c) for x1, y1, x2, y2, c in zip(it, it, it, it, it)]
    except ValueError:
        pass
    matches = list(islice(_ITEM.finditer(answer), MAX_ITEMS))
    return [_fast_item(*m.groups()) if m.group(1) is not None else _slow_item(m.group(0)) for m in matches]


# ----------------------------------------------------------------------------- ground, point

_GROUND_BOX = re.compile(
    rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)"
    rf"|\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]"
)
_POINT = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")


def parse_ground_box(answer: str) -> Box | None:
    """The first box, written `(x1,y1),(x2,y2)` or `[x1, y1, x2, y2]`; None if none or not finite.

    >>> parse_ground_box("the dog at (10,20),(300, 400) and [1, 2, 3, 4]")
    (10.0, 20.0, 300.0, 400.0)
    """
    match = _GROUND_BOX.search(answer)
    if match is None:
        return None
    groups = match.groups()
    values = [_finite_float(v) for v in (groups[:4] if groups[0] is not None else groups[4:])]
    if None in values:
        return None
    return values[0], values[1], values[2], values[3]  # type: ignore[return-value]


def parse_points(answer: str) -> list[Point]:
    """Every `(x, y)` or `[x, y]` in order, at most `MAX_ITEMS`; a number too large for a
    float comes back as inf (the reward scores such a point 0).

    >>> parse_points("[(10, 20), [30.5, 40]]")
    [(10.0, 20.0), (30.5, 40.0)]
    """
    points = []
    for match in _POINT.finditer(answer):
        x, y = (float(v) for v in match.groups())  # digits only: never raises, may be inf
        points.append((x, y))
        if len(points) == MAX_ITEMS:
            break
    return points


# ----------------------------------------------------------------------------- count, choice

_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_LARGER_WORDS = "thirty forty fifty sixty seventy eighty ninety hundred thousand million".split()
_UNITS = "one|two|three|four|five|six|seven|eight|nine"
_COUNT = re.compile(
    r"(?<![\w.])([-+]?\d+(?:\.\d+)?)"
    rf"|\b({'|'.join([*_NUMBER_WORDS, *_LARGER_WORDS])})\b((?:[-\s]+(?:{_UNITS})\b)?)",
    re.IGNORECASE,
)


def parse_count(answer: str) -> int | None:
    """The first number in the answer if it is an integer: digits, or a word up to twenty.

    A first number that is not an integer ("2.5") or a word beyond twenty ("thirty",
    "twenty-one") gives None rather than falling through to a later number.

    >>> parse_count("I count Seven dogs, not 8"), parse_count("3.0"), parse_count("2.5 or 3")
    (7, 3, None)
    """
    match = _COUNT.search(answer)
    if match is None:
        return None
    digits, word, compound = match.groups()
    if digits is not None:
        value = _finite_float(digits)
        return int(value) if value is not None and value.is_integer() else None
    if compound and word.lower() in ("twenty", *_LARGER_WORDS):  # twenty-one, thirty two, ...
        return None
    return _NUMBER_WORDS.get(word.lower())


_SOLE_LETTER = re.compile(r"\W*([A-Za-z])\W*")
# A letter after "answer (is):" in any case, when punctuation or the end follows it
# ("the answer is a cat" is not option A); else an upper-case letter standing alone.
_OPTION_LETTER = re.compile(
    r"(?i:answer(?:\s+is)?\s*:?\s*\(?([a-z])\)?(?=\s*$|[.)\]:,;]))"
    r"|(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9'’])"
)


def parse_choice(answer: str) -> str | None:
    """The first standalone option letter: `B`, `(B)`, `B.`, `Answer: b`, or a lone `b`.

    "A" and "I" followed by a lower-case word are the article and the pronoun, not options.

    >>> parse_choice("Answer: (c)"), parse_choice("I think it is D."), parse_choice("b")
    ('C', 'D', 'B')
    """
    sole = _SOLE_LETTER.fullmatch(answer)
    if sole is not None:
        return sole.group(1).upper()
    for match in _OPTION_LETTER.finditer(answer):
        after_answer, letter = match.groups()
        if after_answer is not None:
            return after_answer.upper()
        end = match.end()
        if letter in "AI" and answer[end : end + 1] == " " and answer[end + 1 : end + 2].islower():
            continue
        return letter
    return None


def parse_yes_no(completion: str) -> bool | None:
    """A yes/no answer: True for "yes", False for "no", None if neither (the first word decides).

    The answer block is read when there is one, else the whole completion: the two-stage
    protocol's gate only decides whether boxes are asked for, and an unformatted "Yes." must
    not drop a category.

    >>> parse_yes_no("<think>a red bus</think><answer>Yes</answer>"), parse_yes_no("No."), parse_yes_no("maybe")
    (True, False, None)
    """
    answer = extract_answer(completion)
    words = normalize_label(answer if answer is not None else completion).split()
    if not words:
        return None
    return True if words[0] == "yes" else False if words[0] == "no" else None


# ----------------------------------------------------------------------------- coordinates


def check_size(size: Any, name: str) -> tuple[float, float]:
    """[width, height] as two positive finite floats; ValueError naming `name` otherwise."""
    if (
        not isinstance(size, Sequence)
        or isinstance(size, str)
        or len(size) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in size)
    ):
        raise ValueError(f"{name} must be [width, height] in pixels, two positive numbers; got {size!r}")
    return float(size[0]), float(size[1])


@dataclass(frozen=True)
class CoordMap:
    """Maps the model's coordinates to pixels of the original image: x·sx, y·sy, then
    clipped to the image when its size is known (and to >= 0 always)."""

    sx: float
    sy: float
    width: float = math.inf
    height: float = math.inf

    @classmethod
    def for_model(
        cls,
        coords: str,
        image_size: Sequence[float] | None = None,
        resized_size: Sequence[float] | None = None,
    ) -> CoordMap:
        """rel1000: 0–1000 relative to the image (Qwen2-VL, Qwen3-VL); pixel: absolute pixels
        of the original image; resized: absolute pixels of the processor-resized image
        (Qwen2.5-VL), which needs `resized_size`."""
        if coords == "auto":
            raise ValueError("coords 'auto' is resolved from the checkpoint's model_type when the model is chosen; "
                             f"to score without a model pass one of {', '.join(COORDS)}")
        if coords not in COORDS:
            raise ValueError(f"coords must be one of {', '.join(COORDS)}; got {coords!r}")
        if image_size is None:
            if coords != "pixel":
                raise ValueError(f"image_size [width, height] is needed to map {coords} coordinates to pixels")
            return cls(1.0, 1.0)
        width, height = check_size(image_size, "image_size")
        if coords == "pixel":
            return cls(1.0, 1.0, width, height)
        if coords == "rel1000":
            return cls(width / 1000.0, height / 1000.0, width, height)
        if resized_size is None:
            raise ValueError("resized_size [width, height] is needed to map resized-image coordinates to pixels")
        resized_w, resized_h = check_size(resized_size, "resized_size")
        return cls(width / resized_w, height / resized_h, width, height)

    def box(self, box: Box) -> Box | None:
        """The box in pixels clipped to the image; None when it has no area left (or is not finite)."""
        x1 = min(max(box[0] * self.sx, 0.0), self.width)
        y1 = min(max(box[1] * self.sy, 0.0), self.height)
        x2 = min(max(box[2] * self.sx, 0.0), self.width)
        y2 = min(max(box[3] * self.sy, 0.0), self.height)
        if x2 > x1 and y2 > y1 and x2 < math.inf and y2 < math.inf:  # False for NaN too
            return x1, y1, x2, y2
        return None

    def point(self, point: Point) -> Point | None:
        """The point in pixels (not clipped: a point off the image is simply off target)."""
        x, y = point[0] * self.sx, point[1] * self.sy
        return (x, y) if math.isfinite(x) and math.isfinite(y) else None


# ----------------------------------------------------------------------------- ground truth


def truth_box(value: Any, what: str) -> Box:
    """A ground-truth pixel box: [x1, y1, x2, y2] or {'Position': [...]}; ValueError naming `what` otherwise."""
    if isinstance(value, dict):
        keys = {str(k).lower(): v for k, v in value.items()}
        if "position" not in keys:
            raise ValueError(f"{what}: a box is [x1, y1, x2, y2] or {{'Position': [...]}}; got {value!r}")
        value = keys["position"]
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise ValueError(f"{what}: a box is four finite numbers [x1, y1, x2, y2]; got {value!r}")
    x1, y1, x2, y2 = (float(v) for v in value)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{what}: box {list(value)} has x2 < x1 or y2 < y1")
    return x1, y1, x2, y2


def rel1000_to_pixels(box: Any, image_size: Sequence[float] | None, what: str) -> Box:
    """A 0-1000 box of Visual-RFT's solution strings in pixels of an image of `image_size`."""
    if image_size is None:
        raise ValueError(f"{what}: Visual-RFT solution strings hold 0-1000 boxes; image_size is needed to convert them")
    width, height = check_size(image_size, "image_size")
    x1, y1, x2, y2 = truth_box(box, what)
    return x1 * width / 1000, y1 * height / 1000, x2 * width / 1000, y2 * height / 1000


def parse_solution(task: str, solution: Any, *, image_size: Sequence[float] | None = None) -> Any:
    """Ground truth in every form `task` accepts -> the task's one normalised form
    (`Task.parse_truth`); ValueError on anything else.

    Strings are Visual-RFT's format: their boxes are 0-1000 and need `image_size`; lists are pixels.

    >>> parse_solution("classify", {"label": "British_Shorthair", "synonyms": ["BSH"]})
    ('british shorthair', 'bsh')
    >>> parse_solution("detect", "<answer>[{'Position': [100, 0, 500, 500]}]</answer>", image_size=(640, 480))
    [(64.0, 0.0, 320.0, 240.0)]
    """
    from visualrft_lite.tasks import get_task

    return get_task(task).parse_truth(solution, image_size=image_size)


# ----------------------------------------------------------------------------- geometry


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two x1y1x2y2 boxes; 0 when either has no area.

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))  # 50 / (100 + 100 - 50)
    0.3333333333333333
    """
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    iou = inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    return iou if 0.0 <= iou <= 1.0 else 0.0  # areas that overflow to inf give inf / inf = NaN


def box_giou(a: Box, b: Box) -> float:
    """Generalised IoU in [-1, 1]: IoU - (enclosing area - union) / enclosing area.

    >>> box_giou((0, 0, 10, 10), (20, 0, 30, 10))  # union 200, hull 300: 0 - 100/300
    -0.3333333333333333
    """
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = area_a + area_b - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    if union <= 0 or hull <= 0:
        return -1.0
    giou = inter / union - (hull - union) / hull
    return giou if -1.0 <= giou <= 1.0 else -1.0  # NaN when areas overflow to inf
