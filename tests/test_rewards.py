"""Rewards: hand-derived numbers (derivation in the comment), the released code's loopholes
staying closed, and properties (finite and in range for any string, detect independent of
the listing order, monotone in IoU)."""

from __future__ import annotations

import doctest
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import visualrft_lite.answers as answers_module
import visualrft_lite.rewards as rewards_module
from visualrft_lite.answers import CoordMap
from visualrft_lite.rewards import (
    _FORMAT,
    COMPONENTS,
    REWARDS,
    RewardOptions,
    box_giou,
    box_iou,
    format_reward,
    parse_prediction,
    score,
    score_batch,
)

ROOT = Path(__file__).resolve().parent.parent
PROPERTY = settings(max_examples=200, deadline=None)
SQUARE = (1000, 1000)  # on a 1000x1000 image rel1000 coordinates are pixels: numbers stay readable


def wrap(answer: str) -> str:
    return f"<think>I look at the image.</think>\n<answer>{answer}</answer>"


def items(*boxes: tuple) -> str:
    """The prompt's answer format: items((box, conf), ...)."""
    return repr([{"Position": list(box), "Confidence": c} for box, c in boxes])


def test_module_docstring_examples_run() -> None:
    # every docstring example is a runnable, checked claim (the tasks' reward functions too)
    import importlib

    tasks = [importlib.import_module(f"visualrft_lite.tasks.{name}")
             for name in ("classify", "detect", "ground", "count", "choice", "point")]
    for module in (answers_module, rewards_module, *tasks):
        failed, attempted = doctest.testmod(module)
        assert attempted > 0 and failed == 0, module.__name__


def test_rewards_import_without_torch() -> None:
    # the reward layer is pure: importing it must not pull in the model libraries
    code = (
        "import sys, visualrft_lite.rewards, visualrft_lite.answers, visualrft_lite.reward_tool, "
        "visualrft_lite.tasks, visualrft_lite.plugins, visualrft_lite.objectives; "
        "visualrft_lite.rewards.score('detect', '<answer>[]</answer>', [], image_size=(4, 4)); "
        "print(sorted({'torch', 'transformers', 'numpy', 'peft', 'PIL'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "a, b, iou, giou",
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0, 1.0),  # identical
        ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3, 1 / 3),  # 50 / (100 + 100 - 50); hull = union
        ((0, 0, 10, 10), (20, 0, 30, 10), 0.0, -1 / 3),  # disjoint: union 200, hull 300: 0 - 100/300
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0, 0.0),  # touching edges: no intersection, hull = union
        ((0, 0, 10, 10), (5, 5, 5, 8), 0.0, 0.0),  # a zero-area box: IoU 0, no division by zero
        # areas overflow to inf: inf / inf would be NaN; the geometry answers 0 and -1 instead
        ((0, 0, 1e308, 1e308), (0, 0, 1e308, 1e308), 0.0, -1.0),
    ],
)
def test_box_iou_and_giou(a: tuple, b: tuple, iou: float, giou: float) -> None:
    assert box_iou(a, b) == pytest.approx(iou) and box_iou(b, a) == pytest.approx(iou)
    assert box_giou(a, b) == pytest.approx(giou)


# ----------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>a</think><answer>b</answer>", 1.0),  # well-formed
        ("  \n<think>a\nb</think>\n\n<answer>\nc\n</answer>\n ", 1.0),  # newlines inside, between, around
        ("<think></think><answer></answer>", 1.0),  # empty blocks are still the format
        ("<answer>b</answer>", 0.0),  # no reasoning block
        ("<think>a</think>", 0.0),  # no answer block
        ("<think>a</think> so <answer>b</answer>", 0.0),  # text between the blocks
        ("<think>a</think><answer>b</answer> done", 0.0),  # text after the answer
        ("hi <think>a</think><answer>b</answer>", 0.0),  # text before the reasoning
        ("<answer>b</answer><think>a</think>", 0.0),  # wrong order
        ("<think>a</think><answer>b", 0.0),  # cut off before </answer>
        ("<think>a</think></think><answer>b</answer>", 1.0),  # the paper's regex: .*? may contain </think>
    ],
)
def test_format_reward(completion: str, expected: float) -> None:
    assert format_reward(completion) == expected


FRAGMENTS = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "\t", "a", "<", ">", "/", "think", "answer"]


@PROPERTY
@given(text=st.one_of(st.text(max_size=80), st.lists(st.sampled_from(FRAGMENTS), max_size=20).map("".join)))
def test_format_reward_is_the_papers_regex(text: str) -> None:
    # the hand-written scan is an optimisation of exactly this regex, and must agree on every string
    assert format_reward(text) == (1.0 if _FORMAT.fullmatch(text.strip()) else 0.0)


# ----------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    "completion, solution, match, expected",
    [
        # the dataset's spelling matches the model's words
        (wrap("British Shorthair"), "british_shorthair", "exact", 1.0),
        # case, hyphens and punctuation do not matter
        (wrap("Bird-of-Paradise."), "bird of paradise", "exact", 1.0),
        # a listed synonym is right
        (wrap("kitty"), {"label": "cat", "synonyms": ["kitty"]}, "exact", 1.0),
        # a wrong class
        (wrap("persian"), "british_shorthair", "exact", 0.0),
        # LOOPHOLE (released code): an empty answer is a substring of every label
        (wrap(""), "abyssinian", "exact", 0.0),
        (wrap(""), "abyssinian", "contains", 0.0),
        # LOOPHOLE (released code): a single letter found in the label
        (wrap("a"), "abyssinian", "exact", 0.0),
        (wrap("a"), "abyssinian", "contains", 0.0),
        # punctuation only normalises to empty: still 0
        (wrap("?!"), "abyssinian", "contains", 0.0),
        # LOOPHOLE (released code): the label only inside <think> and no answer block
        ("<think>it is an abyssinian</think>", "abyssinian", "exact", 0.0),
        # the label in <think>, a wrong answer after it: only the answer counts
        ("<think>abyssinian?</think><answer>bengal</answer>", "abyssinian", "contains", 0.0),
        # a sentence around the label: exact says no, contains says yes
        (wrap("it is a British Shorthair cat"), "british_shorthair", "exact", 0.0),
        (wrap("it is a British Shorthair cat"), "british_shorthair", "contains", 1.0),
        # contains is never the reverse: a part of the label is not the label
        (wrap("shorthair"), "british_shorthair", "contains", 0.0),
        # contains works on whole words: "cat" is not inside "bobcat"
        (wrap("bobcat"), "cat", "contains", 0.0),
    ],
)
def test_classify(completion: str, solution, match: str, expected: float) -> None:
    assert score("classify", completion, solution, options=RewardOptions(match=match))["accuracy"] == expected


# ----------------------------------------------------------------------------- count, choice


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        (wrap("3"), 3, 1.0),  # digits
        (wrap("There are three apples."), 3, 1.0),  # a number word in a sentence
        (wrap("twelve"), "<answer>12</answer>", 1.0),  # R1-V's solution string
        (wrap("4"), 3, 0.0),  # wrong
        (wrap("3 or 4"), 4, 0.0),  # only the first number counts: hedging does not pay
        (wrap("2.5"), 2, 0.0),  # not an integer
        ("<think>3</think><answer>many</answer>", 3, 0.0),  # the right number only inside <think>
        ("<think>3</think>", 3, 0.0),  # no answer block
        (wrap(""), 0, 0.0),  # an empty answer is not zero
    ],
)
def test_count(completion: str, solution, expected: float) -> None:
    assert score("count", completion, solution)["accuracy"] == expected


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        (wrap("B"), "B", 1.0),  # the letter
        (wrap("(B) because ..."), "B", 1.0),  # with its explanation
        (wrap("The answer is: b."), "B", 1.0),  # after "answer", a lower-case letter is read
        (wrap("the answer is a bus"), "A", 0.0),  # ... but not the article of a sentence
        (wrap("A, B, C or D"), "B", 0.0),  # listing every option: the first is A
        ("<think>B</think><answer>C</answer>", "B", 0.0),  # the right letter only inside <think>
    ],
)
def test_choice(completion: str, solution: str, expected: float) -> None:
    assert score("choice", completion, solution)["accuracy"] == expected


# ----------------------------------------------------------------------------- detect

GT = (0, 0, 100, 100)


def det(answer: str, truth: list, **options) -> tuple[float, float]:
    result = score("detect", wrap(answer), truth, image_size=SQUARE, options=RewardOptions(**options))
    return round(result["iou"], 6), round(result["confidence"], 6)


@pytest.mark.parametrize(
    "answer, truth, options, expected",
    [
        # one perfect box: IoU 1 matched; confidence reward = c
        (items((GT, 0.9)), [GT], {}, (1.0, 0.9)),
        # missing confidence means 1.0
        ("[{'Position': [0, 0, 100, 100]}]", [GT], {}, (1.0, 1.0)),
        # IoU 2/3 >= 0.5: (0,0,100,100) vs (0,0,100,150): 10000 / 15000
        (items((GT, 0.8)), [(0, 0, 100, 150)], {}, (0.666667, 0.8)),
        # ... but not at iou_threshold 0.7: unmatched, confidence reward 1 - 0.8
        (items((GT, 0.8)), [(0, 0, 100, 150)], {"iou_threshold": 0.7}, (0.0, 0.2)),
        # IoU 1/3 < 0.5: (0,0,100,100) vs (50,0,150,100): 5000 / 15000; unmatched counts 0
        (items((GT, 0.8)), [(50, 0, 150, 100)], {}, (0.0, 0.2)),
        # two ground-truth boxes, one found: 1 / max(2, 1) (recall counts) ...
        (items((GT, 0.9)), [GT, (500, 500, 600, 600)], {}, (0.5, 0.9)),
        # ... or 1 / #pred with the paper's denominator
        (items((GT, 0.9)), [GT, (500, 500, 600, 600)], {"iou_denominator": "pred"}, (1.0, 0.9)),
        # both found, listed in the other order: (1 + 1) / 2; (0.9 + 0.6) / 2
        (items(((500, 500, 600, 600), 0.6), (GT, 0.9)), [GT, (500, 500, 600, 600)], {}, (1.0, 0.75)),
        # a false positive: iou (1 + 0) / 2; confidence (0.9 + (1 - 0.2)) / 2 = 0.85
        (items((GT, 0.9), ((500, 500, 600, 600), 0.2)), [GT], {}, (0.5, 0.85)),
        # greedy by confidence: A=(0,0,100,60) IoU 0.6 at c 0.9 takes the box before B (IoU 1, c 0.5);
        # iou 0.6 / 2 = 0.3; confidence (0.9 + (1 - 0.5)) / 2 = 0.7
        (items((GT, 0.5), ((0, 0, 100, 60), 0.9)), [GT], {}, (0.3, 0.7)),
        # a prediction takes the ground-truth box of highest IoU (1.0, not 0.6), leaving the other
        (items((GT, 0.9)), [(0, 0, 100, 60), GT], {"iou_denominator": "pred"}, (1.0, 0.9)),
        # a ground-truth box starting right of the prediction's left edge: (0,0,100,100) vs
        # (20,0,110,100): 8000 / (10000 + 9000 - 8000) = 8/11
        (items((GT, 0.9)), [(20, 0, 110, 100)], {}, (0.727273, 0.9)),
        # exact duplicates count once (the most confident copy): as if listed once
        (items((GT, 0.7), (GT, 0.9), (GT, 0.8)), [GT], {}, (1.0, 0.9)),
        # NaN confidence: an invalid prediction, unmatched with confidence reward 0: 1 / 2; (0.9 + 0) / 2
        (items((GT, 0.9))[:-1] + ", {'Position': [0, 0, 100, 100], 'Confidence': NaN}]", [GT], {}, (0.5, 0.45)),
        # an infinite coordinate: invalid likewise
        (items((GT, 0.9))[:-1] + ", {'Position': [0, 0, Infinity, 100], 'Confidence': 0.9}]", [GT], {}, (0.5, 0.45)),
        # a box wholly outside the image: no area after clipping, invalid: 0 / 1; 0 / 1
        (items(((1100, 1100, 1200, 1200), 0.9)), [GT], {}, (0.0, 0.0)),
        # negative coordinates are clipped to the image: (-50,-20,100,100) becomes the perfect box
        (items(((-50, -20, 100, 100), 0.9)), [GT], {}, (1.0, 0.9)),
        # confidence outside [0, 1] is clipped: matched at 1.7 -> 1; unmatched at -0.3 -> 1 - 0
        (items((GT, 1.7)), [GT], {}, (1.0, 1.0)),
        (items(((500, 500, 600, 600), -0.3)), [GT], {}, (0.0, 1.0)),
        # truncated mid-item: the complete item is scored
        (items((GT, 0.9))[:-1] + ", {'Position': [5, 6", [GT], {}, (1.0, 0.9)),
        # JSON, lower-case keys, reversed order: the same reward as the prompt's form
        ('[{"confidence": 0.9, "position": [0, 0, 100, 100]}]', [GT], {}, (1.0, 0.9)),
        # NEGATIVE image: "No Objects" is right (the released code always gave 0)
        ("No Objects", [], {}, (1.0, 1.0)),
        ("[]", [], {}, (1.0, 1.0)),
        # NEGATIVE image with boxes: iou 0; confidence mean(1 - c) = ((1 - 0.9) + (1 - 0.3)) / 2 = 0.4
        (items((GT, 0.9), ((500, 500, 600, 600), 0.3)), [], {}, (0.0, 0.4)),
        # NEGATIVE image, an unreadable answer does not pass for "no objects"
        ("I see nothing", [], {}, (0.0, 0.0)),
        ("", [], {}, (0.0, 0.0)),
        # objects present, "No Objects" answered: nothing right
        ("No Objects", [GT], {}, (0.0, 0.0)),
        ("[]", [GT], {}, (0.0, 0.0)),
    ],
)
def test_detect(answer: str, truth: list, options: dict, expected: tuple) -> None:
    assert det(answer, truth, **options) == expected


def test_detect_reads_only_100_items() -> None:
    # 100 false positives at c 0.5, then the perfect box as the 101st: never read.
    # iou 0 / 100; confidence 100 * (1 - 0.5) / 100 = 0.5
    answer = items(*[((500, 500, 600 + i, 600), 0.5) for i in range(100)], (GT, 1.0))
    assert det(answer, [GT]) == (0.0, 0.5)


def test_detect_answer_only_inside_think_scores_nothing() -> None:
    # LOOPHOLE (released code scans the whole completion when the tag is missing)
    completion = f"<think>{items((GT, 0.9))}</think>"
    assert score("detect", completion, [GT], image_size=SQUARE) == {
        "format": 0.0, "iou": 0.0, "confidence": 0.0, "total": 0.0
    }


def test_detect_no_math_verifier_loophole() -> None:
    # LOOPHOLE (released code): a math verifier pulls one number out of each box list, and when
    # they agree (here the confidences, both 1) it sets iou and confidence to 1.0 whatever the
    # overlap. Here the boxes are disjoint: iou 0, and the unmatched box at c 1 earns 1 - 1 = 0.
    solution = "<answer>[{'Position': [100, 100, 200, 200], 'Confidence': 1}]</answer>"
    completion = wrap("[{'Position': [600, 600, 700, 700], 'Confidence': 1}]")
    result = score("detect", completion, solution, image_size=(640, 480))
    assert (result["iou"], result["confidence"], result["total"]) == (0.0, 0.0, 1.0)


def test_detect_converts_coordinates_per_model() -> None:
    # rel1000 (100,200,300,400) on 640x480 is pixels (64, 96, 192, 192)
    px = [(64, 96, 192, 192)]
    rel = wrap(items(((100, 200, 300, 400), 0.9)))
    assert score("detect", rel, px, image_size=(640, 480))["iou"] == pytest.approx(1.0)
    # the same numbers read as pixels are a different box: (100,200,300,400) vs (64,96,192,192) do not overlap
    assert score("detect", rel, px, image_size=(640, 480), options=RewardOptions(coords="pixel"))["iou"] == 0.0
    # Qwen2.5-VL style: pixels of a 320x240 resize -> x2: (32,48,96,96) becomes (64,96,192,192)
    resized = wrap(items(((32, 48, 96, 96), 0.9)))
    opts = RewardOptions(coords="resized")
    assert score("detect", resized, px, image_size=(640, 480), resized_size=(320, 240), options=opts)["iou"] == 1.0


# ----------------------------------------------------------------------------- ground, point


@pytest.mark.parametrize(
    "completion, metric, expected",
    [
        # the LISA form, perfect (rel1000 on 1000x1000)
        (wrap("(0,0),(100,100)"), "iou", 1.0),
        # the list form, half the box: 5000 / 10000
        (wrap("[0, 0, 50, 100]"), "iou", 0.5),
        # LOOPHOLE (released code): the answer equal to the solution string earned 2.0; here 1.0
        (wrap("(0,0),(100,100)"), "giou", 1.0),
        # GIoU for disjoint (200,0,300,100): union 20000, hull 30000, GIoU = 0 - 10000/30000; (1 - 1/3) / 2
        (wrap("(200,0),(300,100)"), "giou", 1 / 3),
        # plain IoU gives the same miss nothing
        (wrap("(200,0),(300,100)"), "iou", 0.0),
        # only the first box counts: a second, right one does not help
        (wrap("(200,0),(300,100) or (0,0),(100,100)"), "iou", 0.0),
        # no box in the answer
        (wrap("the dog"), "iou", 0.0),
        # the box only inside <think>
        ("<think>(0,0),(100,100)</think><answer>the dog</answer>", "iou", 0.0),
        # a box outside the image has no area: 0, under either metric
        (wrap("(1200,0),(1300,100)"), "giou", 0.0),
    ],
)
def test_ground(completion: str, metric: str, expected: float) -> None:
    result = score("ground", completion, list(GT), image_size=SQUARE, options=RewardOptions(ground_metric=metric))
    assert result["iou"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "answer, metric, expected",
    [
        ("[(50, 50)]", "inside", 1.0),  # inside
        ("[(50, 50), (150, 50), (100, 100), (0, 101)]", "inside", 0.5),  # 2 of 4: an edge counts as inside
        ("no points", "inside", 0.0),  # nothing to score
        # a number too large for a float is a point that scores 0: 1 of 2
        ("[(50, 50), (1" + "0" * 400 + ", 50)]", "inside", 0.5),
        # distance: inside scores exp(0) = 1
        ("[(50, 50)]", "distance", 1.0),
        # target (0,0,300,400) has diagonal 500; (350, 200) is 50 away = 0.1 diagonal -> exp(-0.1 / 0.1)
        ("[(350, 200)]", "distance", math.exp(-1)),
    ],
)
def test_point(answer: str, metric: str, expected: float) -> None:
    target = [0, 0, 300, 400] if "350" in answer else list(GT)
    opts = RewardOptions(point_metric=metric, coords="pixel")
    assert score("point", wrap(answer), target, image_size=SQUARE, options=opts)["point"] == pytest.approx(expected)


# ----------------------------------------------------------------------------- score, options


def test_score_keys_per_task() -> None:
    # the contract training logs and `vrft-lite reward` prints
    solutions = {"classify": "cat", "count": 2, "choice": "A", "detect": [], "ground": GT, "point": GT}
    for task, solution in solutions.items():
        result = score(task, "", solution, image_size=SQUARE)
        assert list(result) == ["format", *COMPONENTS[task], "total"]


def test_total_is_the_weighted_sum() -> None:
    # format 1, iou 1, confidence 0.9; weights format 0.5, iou 2 (confidence defaults to 1):
    # 0.5 * 1 + 2 * 1 + 1 * 0.9 = 3.4
    opts = RewardOptions(weights={"format": 0.5, "iou": 2.0})
    result = score("detect", wrap(items((GT, 0.9))), [GT], image_size=SQUARE, options=opts)
    assert result["total"] == pytest.approx(3.4)
    # the default is the paper's plain sum: 1 + 1 + 0.9
    assert score("detect", wrap(items((GT, 0.9))), [GT], image_size=SQUARE)["total"] == pytest.approx(2.9)


def test_score_batch_equals_score() -> None:
    completions = [wrap(items((GT, 0.9))), wrap("No Objects"), "junk", wrap(items(((0, 0, 50, 100), 0.4)))]
    batch = score_batch("detect", completions, [GT], image_size=SQUARE)
    assert batch == [score("detect", c, [GT], image_size=SQUARE) for c in completions]
    assert [r["iou"] for r in batch] == [1.0, 0.0, 0.0, 0.5]  # the last: 5000 / 10000, matched


def test_score_errors_are_about_the_ground_truth_not_the_completion() -> None:
    # rel1000 needs the image size to reach pixels
    with pytest.raises(ValueError, match="image_size"):
        score("detect", wrap("[]"), [GT])
    with pytest.raises(ValueError, match="unknown task"):
        score("caption", "x", "y")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"coords": "norm"}, "reward.coords must be one of rel1000, pixel, resized"),
        ({"iou_threshold": 0}, r"\(0, 1\]"),  # 0 would match boxes that do not overlap
        ({"iou_threshold": 1.5}, r"\(0, 1\]"),
        ({"iou_threshold": "half"}, "finite number"),
        ({"iou_denominator": "gt"}, "max, pred"),
        ({"match": "fuzzy"}, "exact, contains"),
        ({"ground_metric": "diou"}, "iou, giou"),
        ({"point_metric": "near"}, "inside, distance"),
        ({"point_sigma": 0}, "> 0"),
        ({"weights": {"acuracy": 1.0}}, "did you mean 'accuracy'"),  # a typo gets a hint
        ({"weights": {"format": -1}}, r"\[0, 1000\]"),
        ({"weights": {"format": float("nan")}}, "finite number"),
        ({"iou_treshold": 0.5}, "unknown key 'iou_treshold' in reward; did you mean 'iou_threshold'"),
    ],
)
def test_reward_options_validation(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RewardOptions.from_dict(values, "reward")


def test_reward_options_as_a_config_section() -> None:
    # the config layer builds the `reward:` section from YAML with this dataclass
    from visualrft_lite.config import config_from_dict

    cfg = config_from_dict({"reward": {"iou_denominator": "pred", "weights": {"format": 0.5}}})
    # coords follows model.coords, which is `auto` until the checkpoint resolves it
    assert cfg.reward == RewardOptions(coords="auto", iou_denominator="pred", weights={"format": 0.5})
    assert cfg.reward.weight("format") == 0.5 and cfg.reward.weight("iou") == 1.0


# ----------------------------------------------------------------------------- parse_prediction


def test_parse_prediction_detect_is_what_the_reward_reads() -> None:
    # rel1000 on 640x480; the invalid NaN item and the duplicate are gone; most confident first;
    # the box past the edge is clipped; confidence 1.3 is clipped to 1
    answer = (
        "[{'Position': [0, 0, 500, 500], 'Confidence': 0.4}, {'Position': [0, 0, 500, 500], 'Confidence': 0.3},"
        " {'Position': [500, 500, 1100, 1000], 'Confidence': 1.3}, {'Position': [1, 2, 3, 4], 'Confidence': NaN}]"
    )
    assert parse_prediction("detect", wrap(answer), image_size=(640, 480)) == [
        ((320.0, 240.0, 640.0, 480.0), 1.0),
        ((0.0, 0.0, 320.0, 240.0), 0.4),
    ]


@pytest.mark.parametrize(
    "task, completion, expected",
    [
        ("ground", wrap("(100,0),(500,500)"), (64.0, 0.0, 320.0, 240.0)),
        ("ground", wrap("nothing"), None),
        ("point", wrap("[(500, 500), (1000, 0)]"), [(320.0, 240.0), (640.0, 0.0)]),
        ("classify", wrap("British_Shorthair"), "british shorthair"),
        ("classify", "<think>cat</think>", None),
        ("count", wrap("seven"), 7),
        ("choice", wrap("(d)"), "D"),
        ("detect", "<think>a</think>", []),
    ],
)
def test_parse_prediction(task: str, completion: str, expected) -> None:
    assert parse_prediction(task, completion, image_size=(640, 480)) == expected


# ----------------------------------------------------------------------------- properties

FRAGMENTS_ANY = [
    "<think>", "</think>", "<answer>", "</answer>", "[", "]", "{", "}", "(", ")", ",", ":", " ", "\n",
    "'Position'", '"position"', "'Confidence'", "NaN", "inf", "-Infinity", "1e999", "1e308", "-5", "0", "0.5",
    "1.7", "-0.3", "100", "1000", "No Objects", "twenty", "three", "B", "(C)", "cat", "'", "\x00",
    "9" * 310,  # overflows to inf as a float: areas of inf, inf / inf = NaN if unguarded
]
ANY_COMPLETION = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(FRAGMENTS_ANY), max_size=80).map("".join))
TRUTHS = {
    "classify": "cat",
    "count": 3,
    "choice": "B",
    "detect": [GT, (300, 300, 700, 900)],
    "ground": GT,
    "point": GT,
}
ALL_OPTIONS = st.builds(
    RewardOptions,
    coords=st.sampled_from(["rel1000", "pixel"]),
    iou_denominator=st.sampled_from(["max", "pred"]),
    match=st.sampled_from(["exact", "contains"]),
    ground_metric=st.sampled_from(["iou", "giou"]),
    point_metric=st.sampled_from(["inside", "distance"]),
)


@PROPERTY
@given(
    completion=ANY_COMPLETION,
    task=st.sampled_from(sorted(TRUTHS)),
    options=ALL_OPTIONS,
    negative=st.booleans(),
    sized=st.booleans(),
)
def test_every_reward_is_finite_and_in_range(
    completion: str, task: str, options: RewardOptions, negative: bool, sized: bool
) -> None:
    truth = [] if task == "detect" and negative else TRUTHS[task]
    # pixel coordinates without an image size are not clipped: the unbounded case
    image_size = (640, 480) if sized or options.coords != "pixel" else None
    result = score(task, completion, truth, image_size=image_size, options=options)
    assert set(result) == {"format", *COMPONENTS[task], "total"}
    for name, value in result.items():
        assert math.isfinite(value)
        assert 0.0 <= value <= (len(result) - 1 if name == "total" else 1.0), (name, value)
    # the registry functions themselves, without score's final guard, are finite and in range too
    answer = answers_module.extract_answer(completion) or completion
    coord_map = CoordMap.for_model(options.coords, image_size)
    parsed = answers_module.parse_solution(task, truth)
    for value in REWARDS[task](answer, parsed, coord_map=coord_map, options=options).values():
        assert math.isfinite(value) and 0.0 <= value <= 1.0


BOX = st.tuples(st.integers(0, 990), st.integers(0, 990), st.integers(1, 300), st.integers(1, 300)).map(
    lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3])
)


@PROPERTY
@given(
    boxes=st.lists(BOX, min_size=1, max_size=10),
    confidences=st.lists(st.integers(0, 100), min_size=10, max_size=10, unique=True),
    truth=st.lists(BOX, max_size=6),
    data=st.data(),
)
def test_detect_does_not_depend_on_the_listing_order(boxes: list, confidences: list, truth: list, data) -> None:
    # with distinct confidences, matching order is fixed by the confidences alone
    preds = [(box, c / 100) for box, c in zip(boxes, confidences)]
    shuffled = data.draw(st.permutations(preds))
    first = score("detect", wrap(items(*preds)), truth, image_size=SQUARE)
    assert score("detect", wrap(items(*shuffled)), truth, image_size=SQUARE) == first


def reference_detect(preds: list, truth: list, threshold: float = 0.5) -> tuple[float, float]:
    """The issue's definition, written plainly (valid pixel boxes, distinct ones, conf in [0, 1])."""
    if not truth:
        return (1.0, 1.0) if not preds else (0.0, sum(1 - c for _, c in preds) / len(preds))
    if not preds:
        return 0.0, 0.0
    unmatched = sorted(truth, key=lambda g: g[0])  # equal IoUs go to the leftmost box (documented)
    iou_sum = conf_sum = 0.0
    for box, c in sorted(preds, key=lambda p: -p[1]):
        ious = [box_iou(box, g) for g in unmatched]
        best = max(ious, default=0.0)
        if best >= threshold and best > 0:
            iou_sum += best
            conf_sum += c
            del unmatched[ious.index(best)]
        else:
            conf_sum += 1 - c
    return iou_sum / max(len(truth), len(preds)), conf_sum / len(preds)


@PROPERTY
@given(
    boxes=st.lists(BOX, max_size=8, unique_by=lambda b: tuple(min(v, 1000) for v in b)),  # distinct after clipping
    confidences=st.lists(st.integers(0, 100), min_size=8, max_size=8),
    truth=st.lists(BOX, max_size=6),
)
def test_detect_matches_the_plain_definition(boxes: list, confidences: list, truth: list) -> None:
    # the inlined, early-exit matching loop computes the same numbers as the plain definition
    preds = [(box, c / 100) for box, c in zip(boxes, confidences)]
    answer = items(*preds) if preds else "No Objects"
    expected = reference_detect([(tuple(min(v, 1000) for v in b), c) for b, c in preds], truth)
    got = score("detect", wrap(answer), truth, image_size=SQUARE)
    assert (got["iou"], got["confidence"]) == (pytest.approx(expected[0]), pytest.approx(expected[1]))


def test_detect_order_matters_only_through_confidence() -> None:
    # the property above can fail: with EQUAL confidences the written order decides who matches.
    # A=(0,0,100,60) IoU 0.6, B=GT IoU 1, both at 0.9: the first listed takes the box.
    # A first: iou 0.6 / 2 = 0.3; B first: 1 / 2 = 0.5
    a, b = ((0, 0, 100, 60), 0.9), (GT, 0.9)
    assert det(items(a, b), [GT])[0] == 0.3
    assert det(items(b, a), [GT])[0] == 0.5


@PROPERTY
@given(w1=st.integers(1, 100), w2=st.integers(1, 100), c=st.integers(0, 100))
def test_detect_is_monotone_in_iou_for_a_single_box(w1: int, w2: int, c: int) -> None:
    # one box (0,0,w,100) against GT (0,0,100,100) has IoU w / 100, increasing in w
    w1, w2 = sorted((w1, w2))
    conf = c / 100
    low = score("detect", wrap(items(((0, 0, w1, 100), conf))), [GT], image_size=SQUARE)
    high = score("detect", wrap(items(((0, 0, w2, 100), conf))), [GT], image_size=SQUARE)
    assert low["iou"] <= high["iou"]
    # the total too, whenever a match's confidence reward c is not below 1 - c - tau (c >= 0.25):
    # crossing tau adds tau to iou and changes confidence by c - (1 - c)
    if conf >= 0.25:
        assert low["total"] <= high["total"]


def test_low_confidence_makes_a_hit_cost_total() -> None:
    # why the property above needs c >= 0.25: at c 0.1 a miss (w 40: iou 0, confidence 0.9)
    # beats a hit (w 60: iou 0.6, confidence 0.1): 1 + 0 + 0.9 = 1.9 > 1 + 0.6 + 0.1 = 1.7.
    # This is the paper's confidence reward teaching calibration, not a bug.
    miss = score("detect", wrap(items(((0, 0, 40, 100), 0.1))), [GT], image_size=SQUARE)["total"]
    hit = score("detect", wrap(items(((0, 0, 60, 100), 0.1))), [GT], image_size=SQUARE)["total"]
    assert (miss, hit) == (pytest.approx(1.9), pytest.approx(1.7))


@PROPERTY
@given(s1=st.integers(0, 99), s2=st.integers(0, 99))
def test_ground_is_monotone_in_iou(s1: int, s2: int) -> None:
    # (s,0,s+100,100) against GT has IoU (100 - s) / (100 + s), decreasing in the shift s
    s1, s2 = sorted((s1, s2))
    for metric in ("iou", "giou"):
        opts = RewardOptions(ground_metric=metric)
        near = score("ground", wrap(f"({s1},0),({s1 + 100},100)"), GT, image_size=SQUARE, options=opts)["iou"]
        far = score("ground", wrap(f"({s2},0),({s2 + 100},100)"), GT, image_size=SQUARE, options=opts)["iou"]
        assert near >= far
        if metric == "iou":
            assert near == pytest.approx((100 - s1) / (100 + s1))
