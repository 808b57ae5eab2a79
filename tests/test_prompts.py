"""Prompt templates (the paper's text exactly), render_prompt rules, and SFT targets."""

from __future__ import annotations

import pytest

from visualrft_lite.answers import CoordMap, extract_answer, parse_detections, parse_ground_box, parse_points
from visualrft_lite.data.records import Record
from visualrft_lite.errors import UserError
from visualrft_lite.prompts import TEMPLATES, render_prompt, sft_target, to_model_box, with_article

# The released Visual-RFT prompts, spelled out by hand from the reference (not built from the
# module's own pieces, so a drift in the templates fails here).
PAPER_CLASSIFY_AIRCRAFT = (
    "This is an image containing an aircraft. Please identify the model of the aircraft based on the image.\n"
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "The output answer format should be as follows:\n"
    "<think> ... </think> <answer>species name</answer>\n"
    "Please strictly follow the format."
)
PAPER_DETECT_BUS = (
    "Detect all objects belonging to the category 'bus' in the image, and provide the bounding boxes "
    "(between 0 and 1000, integer) and confidence (between 0 and 1, with two decimal places).\n"
    "If no object belonging to the category 'bus' in the image, return 'No Objects'.\n"
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "The output answer format should be as follows:\n"
    "<think> ... </think> <answer>[{'Position': [x1, y1, x2, y2], 'Confidence': number}, ...]</answer>\n"
    "Please strictly follow the format."
)
PAPER_GROUND = (
    "Output the bounding box in the image corresponding to the instruction: the cup a child could drink from "
    "Output the thinking process in <think> </think> and your grounding box. "
    'Following "<think> thinking process </think>\n<answer>(x1,y1),(x2,y2)</answer>" format.'
)


def rec(task, solution=None, prompt=None, size=(200, 100), **fields):
    return Record("x.png", task, solution, fields=fields, prompt=prompt, image_size=size)


PAPER_CASES = [
    # Classification (FGVC-Aircraft wording: "an aircraft", attribute "model").
    (rec("classify", {"label": "a320"}, kind="aircraft", attribute="model"), PAPER_CLASSIFY_AIRCRAFT),
    # Detection: the category appears twice, the dict example keeps its braces.
    (rec("detect", [], category="bus"), PAPER_DETECT_BUS),
    # Grounding (LISA): the instruction is the query.
    (rec("ground", [0, 0, 1, 1], query="the cup a child could drink from"), PAPER_GROUND),
]


@pytest.mark.parametrize("record,expected", PAPER_CASES, ids=["classify", "detect", "ground"])
def test_paper_prompts_render_exactly(record, expected):
    assert render_prompt(record) == expected


def test_pet_classification_uses_a_not_an():
    text = render_prompt(rec("classify", kind="pet", attribute="species"))
    assert text.startswith("This is an image containing a pet. Please identify the species of the pet")


RENDER_CASES = [
    # A verbatim prompt (hub data) is returned untouched, fields or not.
    ("verbatim", rec("detect", [], prompt="as shipped", category="dog"), None, "as shipped"),
    # An explicit template beats the verbatim prompt: the two-stage evaluation asks hub
    # detection records the presence question.
    ("presence over verbatim", rec("detect", [], prompt="as shipped", category="apple"), "presence",
     "Is there an apple in the image? Answer yes or no.\n"),
    # A literal format string works as a template.
    ("literal template", rec("count", 2, query="How many?"), "Q: {query}", "Q: How many?"),
    # Count: the query, then the think/answer instruction with a number example.
    ("count", rec("count", 3, query="How many circles are there?"), None,
     "How many circles are there?\nOutput the thinking process in <think> </think>"),
    # Choice: options become lettered lines.
    ("choice", rec("choice", "B", query="Which shape?", options=["circle", "square"]), None,
     "Which shape?\nA. circle\nB. square\nOutput the thinking"),
    # Choice whose query already lists the options: no blank line.
    ("choice inline", rec("choice", "B", query="Which? A. x B. y"), None, "Which? A. x B. y\nOutput the thinking"),
    # Point: 0-1000 wording by default.
    ("point", rec("point", [0, 0, 1, 1], query="Point at the cup."), None,
     "Point at the cup.\nOutput the points as [(x1, y1), ...] (between 0 and 1000).\n"),
    # classify_labels lists the answer space.
    ("labels", rec("classify", kind="pet", attribute="species", labels=["sphynx", "british shorthair"]),
     "classify_labels", "Choose one of: sphynx, british shorthair.\n"),
]


@pytest.mark.parametrize("case,record,template,expected", RENDER_CASES, ids=[c[0] for c in RENDER_CASES])
def test_render_prompt(case, record, template, expected):
    text = render_prompt(record, template)
    assert text.startswith(expected) or expected in text, text


def test_every_template_ends_with_the_answer_format():
    for name, template in TEMPLATES.items():
        assert "<answer>" in template and "<think>" in template, name


def test_pixel_coordinates_change_the_box_wording():
    # Qwen2.5-VL answers in pixels; telling it "0 to 1000" would contradict its training.
    text = render_prompt(rec("detect", [], category="bus"), coords="resized")
    assert "(in pixels of the image, integer)" in text and "1000" not in text


RENDER_ERRORS = [
    # The detection template needs a category the record does not have.
    (rec("detect", []), None, "'category'"),
    # A user template naming an unknown field.
    (rec("count", 1, query="q"), "{query} {colour}", "'colour'"),
    # Unbalanced braces in a user template.
    (rec("count", 1, query="q"), "{query", "format string"),
]


@pytest.mark.parametrize("record,template,needle", RENDER_ERRORS)
def test_render_errors_are_one_line(record, template, needle):
    with pytest.raises(UserError) as e:
        render_prompt(record, template)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_with_article():
    assert (with_article("aircraft"), with_article("car"), with_article("egg roll")) == ("an aircraft", "a car", "an egg roll")


# ----------------------------------------------------------------------------- SFT targets

SFT_CASES = [
    # Classification: the label as the answer.
    ("classify", rec("classify", {"label": "british shorthair", "synonyms": []}, kind="pet", attribute="species"),
     {}, "british shorthair"),
    # Detection in a 200x100 image: x·1000/200 and y·1000/100, so [10, 20, 50, 60] → [50, 200, 250, 600].
    ("detect rel1000", rec("detect", [[10, 20, 50, 60]], category="bus"), {},
     "[{'Position': [50, 200, 250, 600], 'Confidence': 1.00}]"),
    # Pixel convention: the boxes as integers, unscaled.
    ("detect pixel", rec("detect", [[10.4, 20, 50, 60.6]], category="bus"), {"coords": "pixel"},
     "[{'Position': [10, 20, 50, 61], 'Confidence': 1.00}]"),
    # Resized convention: 200x100 resized to 400x50 doubles x and halves y: [10, 20, 50, 60] → [20, 10, 100, 30].
    ("detect resized", rec("detect", [[10, 20, 50, 60]], category="bus"), {"coords": "resized", "resized_size": (400, 50)},
     "[{'Position': [20, 10, 100, 30], 'Confidence': 1.00}]"),
    # A negative image answers exactly the prompt's "No Objects".
    ("detect negative", rec("detect", [], category="bus"), {}, "No Objects"),
    # Grounding: the LISA form (x1,y1),(x2,y2); [20, 10, 100, 50] in 200x100 → (100,100),(500,500).
    ("ground", rec("ground", [20, 10, 100, 50], query="q"), {}, "(100,100),(500,500)"),
    # Point: the centre of the target box, (60, 30) px → (300, 300).
    ("point", rec("point", [20, 10, 100, 50], query="q"), {}, "[(300, 300)]"),
    ("count", rec("count", 4, query="q"), {}, "4"),
    ("choice", rec("choice", "C", query="q"), {}, "C"),
]


@pytest.mark.parametrize("case,record,kwargs,answer", SFT_CASES, ids=[c[0] for c in SFT_CASES])
def test_sft_target(case, record, kwargs, answer):
    text = sft_target(record, **kwargs)
    assert text.startswith("<think>") and "</think> <answer>" in text
    assert extract_answer(text) == answer


def test_sft_target_uses_the_records_own_reasoning():
    r = rec("count", 2, query="q", think="Two circles, one left and one right.")
    assert sft_target(r) == "<think>Two circles, one left and one right.</think> <answer>2</answer>"


def test_sft_boxes_round_trip_through_the_reward_parsers():
    # What SFT teaches must read back (through the reward's own parser and CoordMap) as the
    # truth, within the 0-1000 rounding: 1 unit = 0.2 px in x and 0.1 px in y here.
    boxes = [[0.0, 0.0, 200.0, 100.0], [13.3, 7.7, 91.1, 55.5]]
    items = parse_detections(extract_answer(sft_target(rec("detect", boxes, category="bus"))))
    cmap = CoordMap.for_model("rel1000", (200, 100))
    for (box, conf), truth in zip(items, boxes):
        got = cmap.box(box)
        assert conf == 1.0
        assert all(abs(g - t) <= 0.1 + 1e-9 for g, t in zip(got, truth))
    ground = parse_ground_box(extract_answer(sft_target(rec("ground", boxes[1], query="q"))))
    assert all(abs(g - t) <= 0.1 + 1e-9 for g, t in zip(cmap.box(ground), boxes[1]))
    (px, py), = parse_points(extract_answer(sft_target(rec("point", boxes[1], query="q"))))
    assert cmap.point((px, py)) == pytest.approx((52.2, 31.6), abs=0.2)


def test_to_model_box_needs_resized_size_for_resized_coords():
    with pytest.raises(ValueError):
        to_model_box([0, 0, 1, 1], (10, 10), "resized")
