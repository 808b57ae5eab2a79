"""Answer extraction and parsing: tables of hand-written cases, each with the reason it exists,
and property tests that the parsers are total (never raise, never return a non-finite box)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visualrft_lite.answers import (
    MAX_ITEMS,
    CoordMap,
    extract_answer,
    normalize_label,
    parse_choice,
    parse_count,
    parse_detections,
    parse_ground_box,
    parse_points,
    parse_solution,
)

PROPERTY = settings(max_examples=200, deadline=None)

# ----------------------------------------------------------------------------- extract_answer


@pytest.mark.parametrize(
    "completion, expected",
    [
        # well-formed: the answer text, stripped
        ("<think>a bus</think><answer> bus </answer>", "bus"),
        # newlines between the blocks, as models write them
        ("<think>\nhm\n</think>\n\n<answer>\nbus\n</answer>\n", "bus"),
        # an answer only inside <think>: nothing is scored
        ("<think>it is <answer>bus</answer></think>", None),
        # an answer inside <think> and another after it: only the one after counts
        ("<think><answer>bus</answer></think><answer>train</answer>", "train"),
        # no </think> at all: the first answer block counts (the rule)
        ("<think>no closing tag <answer>bus</answer> <answer>train</answer>", "bus"),
        # </think> without <think> (a template that opens it in the prompt): text before it is reasoning
        ("guess <answer>bus</answer> </think><answer>train</answer>", "train"),
        # a second think block after </think> hides its answer too
        ("<think>a</think><think><answer>bus</answer></think><answer>train</answer>", "train"),
        # cut off by the token limit before </answer>: no answer
        ("<think>a</think><answer>[{'Position': [1, 2, 3, 4]", None),
        # an empty answer is an answer, and an empty one (scored 0 by every reward)
        ("<think>a</think><answer></answer>", ""),
        # no tags at all
        ("a bus", None),
        # the first of two answer blocks after </think>
        ("<think>a</think><answer>bus</answer><answer>train</answer>", "bus"),
    ],
)
def test_extract_answer(completion: str, expected: str | None) -> None:
    assert extract_answer(completion) == expected


# ----------------------------------------------------------------------------- detections


@pytest.mark.parametrize(
    "answer, expected",
    [
        # the prompt's own format: Python literal, single quotes
        ("[{'Position': [1, 2, 30, 40], 'Confidence': 0.9}]", [((1, 2, 30, 40), 0.9)]),
        # JSON with double quotes
        ('[{"Position": [1, 2, 30, 40], "Confidence": 0.5}]', [((1, 2, 30, 40), 0.5)]),
        # keys in any case, no spaces
        ("[{'POSITION':[1,2,30,40],'confidence':0.5}]", [((1, 2, 30, 40), 0.5)]),
        # keys in the other order (the slow path)
        ('[{"confidence": 0.5, "position": [1, 2, 30, 40]}]', [((1, 2, 30, 40), 0.5)]),
        # an extra key does not invalidate the item
        ("[{'Position': [1, 2, 30, 40], 'Confidence': 0.5, 'Label': 'bus'}]", [((1, 2, 30, 40), 0.5)]),
        # missing confidence means 1.0
        ("[{'Position': [1, 2, 30, 40]}]", [((1, 2, 30, 40), 1.0)]),
        # a tuple position (a Python literal)
        ("[{'Position': (1, 2, 30, 40), 'Confidence': 0.5}]", [((1, 2, 30, 40), 0.5)]),
        # truncated mid-item: the complete item is kept, the partial one dropped
        ("[{'Position': [1, 2, 30, 40], 'Confidence': 0.9}, {'Position': [5, 6, 7", [((1, 2, 30, 40), 0.9)]),
        # [[...]] wrapping is tolerated
        ("[[{'Position': [1, 2, 30, 40], 'Confidence': 0.9}]]", [((1, 2, 30, 40), 0.9)]),
        # negative and decimal coordinates parse as written (clipping happens later)
        ("[{'Position': [-5, 2.5, 30, 40], 'Confidence': 0.9}]", [((-5, 2.5, 30, 40), 0.9)]),
        # NaN confidence (valid JSON for Python's parser): the item is invalid, not a NaN reward
        ("[{'Position': [1, 2, 30, 40], 'Confidence': NaN}]", [(None, 0.0)]),
        # an infinite coordinate
        ("[{'Position': [1, 2, Infinity, 40], 'Confidence': 0.5}]", [(None, 0.0)]),
        # a number too large for a float is infinite too
        ("[{'Position': [1, 2, 1e999, 40], 'Confidence': 0.5}]", [(None, 0.0)]),
        # three coordinates
        ("[{'Position': [1, 2, 30], 'Confidence': 0.5}]", [(None, 0.0)]),
        # a quoted number is a string, not a number
        ("[{'Position': [1, 2, 30, '40'], 'Confidence': 0.5}]", [(None, 0.0)]),
        # an item without a position is an (invalid) item
        ("[{'Label': 'bus'}]", [(None, 0.0)]),
        # one invalid item does not spoil the valid one
        (
            "[{'Position': [1, 2, 30, 40], 'Confidence': nan}, {'Position': [1, 2, 30, 40], 'Confidence': 0.3}]",
            [(None, 0.0), ((1, 2, 30, 40), 0.3)],
        ),
        # the explicit negatives
        ("No Objects", []),
        ("'no objects.'", []),
        ("NO OBJECT!", []),
        ("[]", []),
        ("[[]]", []),
        # not a detection answer: None, so that it cannot pass for "no objects"
        ("", None),
        ("two buses", None),
        ("There are no objects", None),
        ("[", None),
        ("[1, 2, 3, 4]", None),
    ],
)
def test_parse_detections(answer: str, expected: list | None) -> None:
    assert parse_detections(answer) == expected


def test_parse_detections_reads_at_most_100_items() -> None:
    # a runaway generation cannot make the reward loop over thousands of boxes
    answer = "[" + ", ".join(f"{{'Position': [{i}, 0, {i + 1}, 1], 'Confidence': 0.5}}" for i in range(150)) + "]"
    items = parse_detections(answer)
    assert items is not None and len(items) == MAX_ITEMS == 100
    assert items[-1][0] == (99, 0, 100, 1)  # the first hundred, in order


def _render(items: list[tuple[list[int], float]], style: str) -> str:
    if style == "prompt":  # exactly the prompt's example (the fast path)
        return repr([{"Position": box, "Confidence": c} for box, c in items])
    if style == "json":
        return json.dumps([{"Position": box, "Confidence": c} for box, c in items])
    if style == "reversed":  # key order flipped, lower case (the slow path)
        return json.dumps([{"confidence": c, "position": box} for box, c in items])
    return "[" + repr([{"Position": box, "Confidence": c} for box, c in items]) + "]"  # [[...]]


@PROPERTY
@given(
    items=st.lists(
        st.tuples(st.lists(st.integers(-50, 1100), min_size=4, max_size=4), st.integers(0, 100).map(lambda c: c / 100)),
        min_size=1,
        max_size=12,
    ),
    style=st.sampled_from(["prompt", "json", "reversed", "wrapped"]),
)
def test_parse_detections_reads_every_style_the_same(items: list, style: str) -> None:
    # the fast and the slow path must agree: the same items whatever the spelling
    parsed = parse_detections(_render(items, style))
    assert parsed == [(tuple(float(v) for v in box), c) for box, c in items]


FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "[", "]", "{", "}", "(", ")", ",", ":", " ", "\n",
    "'Position'", '"position"', "'Confidence'", "NaN", "nan", "inf", "-Infinity", "1e999", "1e308", "-5",
    "0", "0.5", "1.7", "999", "1000", "No Objects", "twenty", "one", "B", "(C)", "cat", "'", '"', "\x00", "é",
]
ANY_TEXT = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join))


@PROPERTY
@given(text=ANY_TEXT)
def test_parsers_are_total(text: str) -> None:
    # whatever the model writes, parsing neither raises nor yields a non-finite box
    items = parse_detections(text)
    for box, conf in items or []:
        assert box is None or (len(box) == 4 and all(math.isfinite(v) for v in box))
        assert math.isfinite(conf)
    box = parse_ground_box(text)
    assert box is None or all(math.isfinite(v) for v in box)
    assert len(parse_points(text)) <= MAX_ITEMS
    count = parse_count(text)
    assert count is None or isinstance(count, int)
    letter = parse_choice(text)
    assert letter is None or (len(letter) == 1 and "A" <= letter <= "Z")
    answer = extract_answer(text)
    assert answer is None or answer in text


# ----------------------------------------------------------------------------- ground, points


@pytest.mark.parametrize(
    "answer, expected",
    [
        # the LISA prompt's form
        ("(10,20),(300,400)", (10, 20, 300, 400)),
        # spaces and decimals
        ("( 10.5 , 20 ) , ( 300 , 400.25 )", (10.5, 20, 300, 400.25)),
        # the list form
        ("[10, 20, 300, 400]", (10, 20, 300, 400)),
        # the first box wins, whichever form comes first
        ("[1, 2, 3, 4] then (10,20),(300,400)", (1, 2, 3, 4)),
        ("(10,20),(300,400) then [1, 2, 3, 4]", (10, 20, 300, 400)),
        # negative coordinates parse (clipped later)
        ("(-10,20),(300,400)", (-10, 20, 300, 400)),
        # no box
        ("the dog on the left", None),
        ("[1, 2, 3]", None),
        # a first box too large for a float is no box (not a later one)
        ("[1, 2, 3, 1" + "0" * 400 + "] [1, 2, 3, 4]", None),
    ],
)
def test_parse_ground_box(answer: str, expected: tuple | None) -> None:
    assert parse_ground_box(answer) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        # both bracket styles, mixed
        ("[(10, 20), [30.5, 40]]", [(10, 20), (30.5, 40)]),
        # a four-number box is not a point
        ("[10, 20, 30, 40]", []),
        # nothing
        ("left of the cup", []),
    ],
)
def test_parse_points(answer: str, expected: list) -> None:
    assert parse_points(answer) == expected


def test_parse_points_reads_at_most_100() -> None:
    # a runaway list is cut, as for detections
    assert len(parse_points("(1, 2) " * 150)) == MAX_ITEMS


# ----------------------------------------------------------------------------- count, choice, labels


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("3", 3),  # digits
        ("There are 4 cats and 2 dogs", 4),  # the first number, not any number
        ("three", 3),  # a number word
        ("Twenty", 20),  # the largest word, any case
        ("seventeen", 17),  # not "seven" + junk
        ("zero", 0),  # zero is a count
        ("3.0", 3),  # an integral decimal
        ("2.5 or 3", None),  # the first number is not an integer: no falling through to 3
        ("twenty-one", None),  # beyond twenty: not read as 20
        ("thirty two", None),  # beyond twenty: not read as 2
        ("one two", 1),  # "one" followed by another small word is still one
        ("x2 cats", None),  # digits glued to a word are not a count
        ("-1", -1),  # a sign is kept (and is never a right count)
        ("none", None),  # no number at all
        ("", None),  # empty answer
    ],
)
def test_parse_count(answer: str, expected: int | None) -> None:
    assert parse_count(answer) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("B", "B"),  # the letter alone
        ("(B)", "B"),  # in parentheses
        ("B.", "B"),  # with a full stop
        ("Answer: B", "B"),  # after a label word
        ("The answer is (c).", "C"),  # lower case after "answer"
        ("the answer is a cat", None),  # the article after "answer is" is not option A
        ("b", "B"),  # a lone lower-case letter
        ("B. Paris", "B"),  # the option with its text
        ("I think D", "D"),  # the pronoun I is not option I
        ("A cat, so C", "C"),  # the article A is not option A
        ("A. a cat", "A"),  # but "A." is the option
        ("C, B", "C"),  # the first letter: listing every option does not win
        ("Paris", None),  # letters inside words are not options
        ("", None),  # empty answer
    ],
)
def test_parse_choice(answer: str, expected: str | None) -> None:
    assert parse_choice(answer) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("British_Shorthair", "british shorthair"),  # the dataset's spelling
        ("  Bird-of-Paradise!  ", "bird of paradise"),  # hyphens become spaces, punctuation goes
        ("st. bernard's", "st bernards"),  # dropped, not replaced by a space
        ("Boeing 737-800", "boeing 737 800"),  # digits stay
        ("a\n\tb", "a b"),  # any whitespace collapses
        ("!!!", ""),  # nothing left
    ],
)
def test_normalize_label(text: str, expected: str) -> None:
    assert normalize_label(text) == expected


# ----------------------------------------------------------------------------- coordinates


def test_coord_map_conventions() -> None:
    # rel1000 on 640x480: x * 640 / 1000, y * 480 / 1000
    assert CoordMap.for_model("rel1000", (640, 480)).box((100, 200, 500, 1000)) == (64, 96, 320, 480)
    # pixel: identity
    assert CoordMap.for_model("pixel", (640, 480)).box((10, 20, 30, 40)) == (10, 20, 30, 40)
    # resized: the processor shrank 640x480 to 320x240, so pixels double
    assert CoordMap.for_model("resized", (640, 480), (320, 240)).box((10, 20, 30, 40)) == (20, 40, 60, 80)
    # pixel without an image size: no upper clip, negatives still clipped to 0
    assert CoordMap.for_model("pixel").box((-5, 0, 5000, 10)) == (0, 0, 5000, 10)


@pytest.mark.parametrize(
    "box, expected",
    [
        ((-50, -50, 100, 100), (0, 0, 100, 100)),  # negative coordinates clip to the image
        ((900, 900, 1200, 1100), (900, 900, 1000, 1000)),  # past the edge clips to it
        ((1100, 0, 1200, 100), None),  # wholly outside: no area left
        ((300, 0, 200, 100), None),  # x2 < x1: no area
        ((100, 100, 100, 200), None),  # zero width
        ((0, 0, 1e308, 1e308), (0, 0, 1000, 1000)),  # huge but finite: clipped, not inf
    ],
)
def test_coord_map_clips_to_the_image(box: tuple, expected: tuple | None) -> None:
    assert CoordMap.for_model("pixel", (1000, 1000)).box(box) == expected


@pytest.mark.parametrize(
    "coords, image_size, resized_size, message",
    [
        ("rel1000", None, None, "image_size"),  # relative coordinates need the image size
        ("resized", (640, 480), None, "resized_size"),  # resized pixels need the resized size
        ("rel1000", (640, 0), None, "positive"),  # a zero-sized image
        ("rel1000", (640, float("nan")), None, "positive"),  # a NaN size
        ("norm1", (640, 480), None, "rel1000"),  # an unknown convention names the known ones
    ],
)
def test_coord_map_errors(coords: str, image_size, resized_size, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CoordMap.for_model(coords, image_size, resized_size)


# ----------------------------------------------------------------------------- solutions

VRFT_DETECT = (
    "<answer>[{'Position': [100, 0, 500, 500], 'Confidence': 1}, {'Position': [0, 500, 1000, 1000], 'Confidence': 1}]"
    "</answer>"
)


@pytest.mark.parametrize(
    "task, solution, image_size, expected",
    [
        # classify: a bare label, normalised
        ("classify", "British_Shorthair", None, ("british shorthair",)),
        # classify: label and synonyms; duplicates after normalisation kept once
        ("classify", {"label": "cat", "synonyms": ["Cat", "kitty"]}, None, ("cat", "kitty")),
        # classify: Visual-RFT's own solution string
        ("classify", "<answer>british_shorthair</answer>", None, ("british shorthair",)),
        # detect: pixel boxes pass through
        ("detect", [[1, 2, 3, 4], [5, 6, 7, 8]], None, [(1, 2, 3, 4), (5, 6, 7, 8)]),
        # detect: a negative image
        ("detect", [], None, []),
        # detect: Visual-RFT's 0-1000 string on 640x480: x * 0.64, y * 0.48
        ("detect", VRFT_DETECT, (640, 480), [(64, 0, 320, 240), (0, 240, 640, 480)]),
        # detect: Visual-RFT's negative
        ("detect", "<answer>No Objects</answer>", (640, 480), []),
        # ground: a pixel box
        ("ground", [10, 20, 30, 40], None, (10, 20, 30, 40)),
        # ground: a 0-1000 string in the LISA prompt's form
        ("ground", "<answer>(100,0),(500,500)</answer>", (640, 480), (64, 0, 320, 240)),
        # point: the target region is a pixel box
        ("point", (0, 0, 10, 10), None, (0, 0, 10, 10)),
        # count: int, string, word, R1-V's answer string
        ("count", 3, None, 3),
        ("count", "3", None, 3),
        ("count", "<answer>three</answer>", None, 3),
        # choice: bare, parenthesised, tagged
        ("choice", "B", None, "B"),
        ("choice", "(c)", None, "C"),
        ("choice", "<answer>D</answer>", None, "D"),
    ],
)
def test_parse_solution(task: str, solution, image_size, expected) -> None:
    assert parse_solution(task, solution, image_size=image_size) == expected


@pytest.mark.parametrize(
    "task, solution, image_size, message",
    [
        ("classify", "", None, "empty"),  # an empty label would make every empty answer right
        ("classify", {"label": "cat", "synonym": ["kitty"]}, None, "synonyms"),  # a typo in a key
        ("detect", VRFT_DETECT, None, "image_size"),  # 0-1000 boxes without the image size
        ("detect", [[1, 2, 3]], None, "four finite numbers"),  # three numbers
        ("detect", [[1, 2, float("nan"), 4]], None, "four finite numbers"),  # NaN in the truth
        ("detect", [[30, 2, 3, 4]], None, "x2 < x1"),  # corners swapped
        ("detect", "<answer>two buses</answer>", (640, 480), "cannot read"),  # unreadable string
        ("ground", "no box here", (640, 480), "no \\(x1"),  # a string without a box
        ("count", True, None, "integer"),  # a bool is not a count
        ("count", "many", None, "integer"),  # nor a word without a number
        ("choice", "Paris", None, "letter"),  # not an option letter
        ("caption", "x", None, "unknown task"),  # unknown task names the known ones
    ],
)
def test_parse_solution_errors(task: str, solution, image_size, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_solution(task, solution, image_size=image_size)
