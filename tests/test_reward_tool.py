"""`vrft-lite reward FILE.jsonl`: the reward's contract, one JSON object per line in and out."""

from __future__ import annotations

import io
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visualrft_lite.reward_tool import reward_help, score_jsonl
from visualrft_lite.rewards import RewardOptions


def run(lines: list[str], options: RewardOptions | None = None) -> tuple[list[dict], list[str], tuple[int, int]]:
    out, err = io.StringIO(), io.StringIO()
    counts = score_jsonl(lines, out, err, options or RewardOptions())
    return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue().splitlines(), counts


def line(**record) -> str:
    return json.dumps(record)


DETECT = "<think>one bus</think><answer>[{'Position': [100, 200, 300, 400], 'Confidence': 0.9}]</answer>"


@pytest.mark.parametrize(
    "record, expected",
    [
        # detect: rel1000 (100,200,300,400) on 640x800 is pixels (64,160,192,320): a perfect match at c 0.9
        (
            {"task": "detect", "completion": DETECT, "solution": [[64, 160, 192, 320]], "image_size": [640, 800]},
            {"format": 1.0, "iou": 1.0, "confidence": 0.9, "total": 2.9},
        ),
        # detect on a negative image: [] is "no objects"; a box there scores iou 0, confidence 1 - 0.9
        (
            {"task": "detect", "completion": DETECT, "solution": [], "image_size": [640, 800]},
            {"format": 1.0, "iou": 0.0, "confidence": 0.1, "total": 1.1},
        ),
        # classify with synonyms; no image needed
        (
            {"task": "classify", "completion": "<think>.</think><answer>kitty</answer>",
             "solution": {"label": "cat", "synonyms": ["kitty"]}},
            {"format": 1.0, "accuracy": 1.0, "total": 2.0},
        ),
        # classify with Visual-RFT's own solution string, answer missing its think block
        (
            {"task": "classify", "completion": "<answer>british shorthair</answer>",
             "solution": "<answer>british_shorthair</answer>"},
            {"format": 0.0, "accuracy": 1.0, "total": 1.0},
        ),
        # ground: (0,0),(500,1000) on 200x100 is (0,0,100,100); truth (0,0,200,100): 10000 / 20000
        (
            {"task": "ground", "completion": "<think>.</think><answer>(0,0),(500,1000)</answer>",
             "solution": [0, 0, 200, 100], "image_size": [200, 100]},
            {"format": 1.0, "iou": 0.5, "total": 1.5},
        ),
        # point: (250,500) rel1000 on 200x100 is (50,50), inside (0,0,100,100); (900,500) is (180,50), outside
        (
            {"task": "point", "completion": "<think>.</think><answer>[(250, 500), (900, 500)]</answer>",
             "solution": [0, 0, 100, 100], "image_size": [200, 100]},
            {"format": 1.0, "point": 0.5, "total": 1.5},
        ),
        # count and choice
        (
            {"task": "count", "completion": "<think>.</think><answer>seven</answer>", "solution": 7},
            {"format": 1.0, "accuracy": 1.0, "total": 2.0},
        ),
        (
            {"task": "choice", "completion": "<think>.</think><answer>(C)</answer>", "solution": "B"},
            {"format": 1.0, "accuracy": 0.0, "total": 1.0},
        ),
        # a NaN confidence in the completion: an invalid box, and still valid JSON out (no NaN)
        (
            {"task": "detect", "solution": [[0, 0, 9, 9]], "image_size": [100, 100],
             "completion": "<think>.</think><answer>[{'Position': [0, 0, 9, 9], 'Confidence': NaN}]</answer>"},
            {"format": 1.0, "iou": 0.0, "confidence": 0.0, "total": 1.0},
        ),
    ],
)
def test_scores_one_object_per_line(record: dict, expected: dict) -> None:
    results, errors, counts = run([json.dumps(record)])
    assert errors == [] and counts == (1, 0)
    assert results[0] == pytest.approx(expected)
    assert list(results[0]) == list(expected)  # the contract's key order: format, components, total


def test_bad_lines_are_reported_with_their_number_and_the_rest_still_scored() -> None:
    good = line(task="count", completion="<think>.</think><answer>2</answer>", solution=2)
    lines = [
        good,                                                                       # 1 fine
        "{not json",                                                                # 2 malformed JSON
        "[1, 2]",                                                                   # 3 not an object
        line(task="caption", completion="x", solution="y"),                         # 4 unknown task
        line(task="count", completion="x"),                                         # 5 no solution
        line(task="detect", completion=DETECT, solution=[[0, 0, 1, 1]]),            # 6 rel1000 without image_size
        line(task="detect", completion=DETECT, solution=[[0, 0, 1]], image_size=[9, 9]),  # 7 bad box
        line(task="detect", completion=DETECT, solution=[], image_size=[640]),      # 8 bad image_size
        line(task="count", completion=3, solution=3),                               # 9 completion not a string
        "",                                                                         # 10 blank: an error in its place
        good,                                                                       # 11 fine
    ]
    results, errors, counts = run(lines)
    assert counts == (2, 9)
    assert len(results) == len(lines)  # output line N answers input line N
    assert [r["line"] for r in results if "error" in r] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert [r["accuracy"] for r in results if "error" not in r] == [1.0, 1.0]
    assert results[0]["accuracy"] == results[10]["accuracy"] == 1.0
    assert [int(re.match(r"line (\d+): ", e).group(1)) for e in errors] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert "not valid JSON" in errors[0] and "not valid JSON" in results[1]["error"]
    assert "unknown task 'caption'" in errors[2]
    assert "missing key 'solution'" in errors[3]
    assert "image_size" in errors[4]
    assert "four finite numbers" in errors[5]
    assert results[9]["error"] == "blank line"


GOOD = line(task="count", completion="<think>.</think><answer>2</answer>", solution=2)


@given(st.lists(st.one_of(st.just(GOOD), st.text(max_size=30), st.binary(max_size=30)), max_size=12))
@settings(max_examples=150, deadline=None)
def test_every_input_line_gets_exactly_one_output_line_in_order(lines: list) -> None:
    # any mix of good lines, arbitrary text and arbitrary bytes (invalid UTF-8 among them):
    # output line i is the score of input line i or an error object naming line i
    lines = [x.replace("\n", " ").replace("\r", " ") if isinstance(x, str) else
             x.replace(b"\n", b" ").replace(b"\r", b" ") for x in lines]  # one physical line each
    results, errors, (scored, failed) = run(lines)
    assert len(results) == len(lines) == scored + failed
    assert len(errors) == failed
    for number, (given_line, result) in enumerate(zip(lines, results), start=1):
        if given_line == GOOD:
            assert result == {"format": 1.0, "accuracy": 1.0, "total": 2.0}
        elif "error" in result:
            assert result["line"] == number and "\n" not in result["error"]


def test_the_command_keeps_lines_aligned_with_invalid_utf8_and_blank_lines(tmp_path) -> None:
    from helpers import invoke

    path = tmp_path / "in.jsonl"
    path.write_bytes(GOOD.encode() + b"\n\xff\xfe broken\n\n" + GOOD.encode() + b"\n")
    result = invoke("reward", path)
    assert result.exit_code == 1  # some lines failed; the good ones were still scored
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(out) == 4
    assert out[0]["total"] == out[3]["total"] == 2.0
    assert out[1] == {"error": "not UTF-8 text (byte 1)", "line": 2}
    assert out[2] == {"error": "blank line", "line": 3}
    assert "line 2: not UTF-8" in result.stderr and "Traceback" not in result.output


def test_options_select_the_variants() -> None:
    # two ground-truth boxes, one found: iou 1 / max(2, 1) by default, 1 / 1 with --iou-denominator pred
    truth = [[64, 160, 192, 320], [0, 0, 10, 10]]
    record = line(task="detect", completion=DETECT, solution=truth, image_size=[640, 800])
    assert run([record])[0][0]["iou"] == 0.5
    assert run([record], RewardOptions(iou_denominator="pred"))[0][0]["iou"] == 1.0
    # --coords pixel reads (100,200,300,400) as pixels: it overlaps (64,160,192,320) by 92 x 120 = 11040;
    # union 40000 + 15360 - 11040 = 44320; IoU 0.25 < 0.5, so unmatched
    assert run([record], RewardOptions(coords="pixel"))[0][0]["iou"] == 0.0


def test_resized_size_is_read_from_the_line() -> None:
    # Qwen2.5-VL style pixels of a 320x400 resize of 640x800: (50,100,150,200) doubles to (100,200,300,400)
    completion = "<think>.</think><answer>[{'Position': [50, 100, 150, 200], 'Confidence': 1.0}]</answer>"
    record = line(task="detect", completion=completion, solution=[[100, 200, 300, 400]],
                  image_size=[640, 800], resized_size=[320, 400])
    assert run([record], RewardOptions(coords="resized"))[0][0]["iou"] == 1.0


def test_the_help_example_is_true() -> None:
    # the example in the command's help text is scored, and prints what the help says it prints
    help_text = reward_help()
    example_in = re.search(r"echo '(\{.*?\})'", help_text).group(1)
    example_out = re.search(r"^  (\{.*?\})$", help_text, re.MULTILINE).group(1)
    results, errors, _ = run([example_in])
    assert errors == [] and results == [json.loads(example_out)]
