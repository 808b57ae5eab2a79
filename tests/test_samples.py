"""`vrft-lite samples`: a fake run directory's completions drawn on their images, one grid per group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from visualrft_lite.config import load_config
from visualrft_lite.draw import PREDICTION_COLOUR, TRUTH_COLOUR
from visualrft_lite.errors import UserError
from visualrft_lite.samples import draw_samples, group_rows, read_samples

W, H = 200, 100
# grid geometry (draw.caption / draw.grid): a 200x100 image is not scaled down (max side 320),
# it is centred in a 320-wide tile, (320 − 200) / 2 = 60 from its left; tiles start 6 px in
# from the left and 28 (title) + 6 px down. So image pixel (x, y) of tile 0 is at (66 + x, 34 + y).
ORIGIN = (66, 34)

DETECT = "<think>a bus</think><answer>[{'Position': [100, 200, 500, 600], 'Confidence': 0.9}]</answer>"
# rel1000 [100, 200, 500, 600] on 200x100 -> pixels (20, 20, 100, 60); its left edge is at x = 20.


def sample(step: int, group: int, index: int, image: str, task: str, solution, completion: str, total: float) -> dict:
    return {"step": step, "group": group, "index": index, "task": task, "image": image, "image_size": [W, H],
            "prompt": "Detect the bus.", "solution": solution, "completion": completion,
            "reward": {"format": 1.0, "total": total}, "advantage": 0.5}


def make_run(tmp_path: Path, rows: list[dict], extra: str = "") -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(load_config(None, ["model.coords=rel1000"]).to_yaml())  # as a run records it
    Image.new("RGB", (W, H), "white").save(run / "bus.png")
    Image.new("RGB", (W, H), "white").save(tmp_path / "flower.jpg")
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)
    return run


def rows_for_two_steps(tmp_path: Path) -> list[dict]:
    truth = [[120, 10, 180, 90]]  # pixels
    return [
        sample(10, 0, 0, "bus.png", "detect", truth, DETECT, 2.9),
        sample(10, 0, 1, "bus.png", "detect", truth, "no answer", 0.0),
        sample(20, 0, 1, "bus.png", "detect", truth, "no answer", 0.0),  # out of order: index sorts
        sample(20, 0, 0, "bus.png", "detect", truth, DETECT, 2.9),
        sample(20, 1, 0, str(tmp_path / "flower.jpg"), "classify", "daisy",
               "<think>petals</think><answer>rose</answer>", 1.0),  # an absolute path
        sample(20, 2, 0, "missing.png", "classify", "daisy", "<answer>daisy</answer>", 1.0),
    ]


def near(pixel: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 10 for a, b in zip(pixel, colour))


def test_draws_the_last_step_one_png_per_group(tmp_path: Path):
    run = make_run(tmp_path, rows_for_two_steps(tmp_path))
    notes: list[str] = []
    paths = draw_samples(run, echo=notes.append)
    assert [p.name for p in paths] == ["step20-group0.png", "step20-group1.png"]  # the last step by default
    assert all(p.parent == run / "samples" for p in paths)
    assert notes == ["note: skipped group 2 of step 20: image 'missing.png' not found"]

    with Image.open(paths[0]) as im:
        assert im.format == "PNG"
        grid = im.convert("RGB")
    assert grid.width > 2 * 320  # two tiles side by side
    x0, y0 = ORIGIN
    # tile 0 is completion #0 (index order): its predicted box's left edge (x = 20) in red at mid-height
    assert near(grid.getpixel((x0 + 20, y0 + 40)), PREDICTION_COLOUR)
    # the ground truth's left edge (x = 120) in green, on every tile (tile 1 starts 320 + 6 further right)
    assert near(grid.getpixel((x0 + 120, y0 + 50)), TRUTH_COLOUR)
    assert near(grid.getpixel((x0 + 326 + 120, y0 + 50)), TRUTH_COLOUR)
    # tile 1 said nothing parseable: no red where tile 0 has its box
    assert near(grid.getpixel((x0 + 326 + 20, y0 + 40)), (255, 255, 255))


def test_step_and_out_options(tmp_path: Path):
    run = make_run(tmp_path, rows_for_two_steps(tmp_path))
    out = tmp_path / "figs"
    paths = draw_samples(run, step=10, out=out, echo=lambda s: None)
    assert paths == [out / "step10-group0.png"]
    with Image.open(paths[0]) as im:
        im.verify()
    with pytest.raises(UserError, match="no samples of step 15; steps with samples: 10, 20"):
        draw_samples(run, step=15, echo=lambda s: None)


@pytest.mark.parametrize("content, message", [
    (None, "has no samples.jsonl"),
    ("", "has no usable samples"),
    ('not json\n{"step": 1}\n', r"has no usable samples \(2 malformed"),
])
def test_no_samples_is_a_one_line_error(tmp_path: Path, content: str | None, message: str):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "samples.jsonl").write_text(content)
    with pytest.raises(UserError, match=message):
        draw_samples(run)


def test_every_image_missing_is_an_error(tmp_path: Path):
    run = make_run(tmp_path, [sample(1, 0, 0, "gone.png", "classify", "daisy", "<answer>daisy</answer>", 1.0)])
    with pytest.raises(UserError, match="no group of step 1 could be drawn"):
        draw_samples(run, echo=lambda s: None)


def test_lines_without_group_are_grouped_by_image_and_prompt(tmp_path: Path):
    # the older samples.jsonl lines (no group / index): same image + prompt -> one group
    rows = [{"step": 3, "task": "classify", "image": "a.png", "prompt": "p", "solution": "x", "completion": c}
            for c in ("1", "2")]
    rows.append({"step": 3, "task": "classify", "image": "b.png", "prompt": "p", "solution": "x", "completion": "3"})
    groups = group_rows(rows)
    assert [[r["completion"] for r in g] for g in groups.values()] == [["1", "2"], ["3"]]


def test_read_samples_skips_malformed_lines(tmp_path: Path):
    path = tmp_path / "samples.jsonl"
    good = {"step": 1, "task": "count", "solution": 3, "completion": "<answer>3</answer>"}
    path.write_text(json.dumps(good) + '\n[1]\n{"step": "1", "task": "count", "solution": 3, "completion": ""}\n\n')
    rows, skipped = read_samples(path)
    assert rows == [good] and skipped == 2


def test_cli_samples(tmp_path: Path):
    run = make_run(tmp_path, rows_for_two_steps(tmp_path))
    result = CliRunner().invoke(main, ["samples", str(run), "--step", "20"])
    assert result.exit_code == 0, result.output
    assert "skipped group 2" in result.output and str(run / "samples" / "step20-group1.png") in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["samples", str(empty)])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "has no samples.jsonl" in result.output


@pytest.mark.parametrize("task, solution, completion", [
    ("ground", [20, 10, 120, 90], "<think>.</think><answer>(100,100),(600,900)</answer>"),
    ("point", [20, 10, 120, 90], "<think>.</think><answer>(300, 500), (900, 100)</answer>"),
    ("count", 3, "<think>.</think><answer>4</answer>"),
    ("choice", "B", "<think>.</think><answer>(C)</answer>"),
    ("classify", {"label": "daisy", "synonyms": ["marguerite"]}, "<think>.</think>"),  # no answer tag
])
def test_every_task_draws(tmp_path: Path, task: str, solution, completion: str):
    run = make_run(tmp_path, [sample(1, 0, k, "bus.png", task, solution, completion, 1.0) for k in range(3)])
    (path,) = draw_samples(run, echo=lambda s: None)
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    assert rgb.width > 3 * 320
    colours = {rgb.getpixel((x, y)) for x in range(0, rgb.width, 2) for y in range(0, rgb.height, 2)}
    assert any(near(c, TRUTH_COLOUR) for c in colours)
    assert any(near(c, PREDICTION_COLOUR) for c in colours)  # the answer, or a red "no answer" tag
