"""`vrft-lite data show`: counts, classes, prompts, skipped files, and the drawn contact sheet."""

from __future__ import annotations

import json

from helpers import assert_one_line_error, invoke
from PIL import Image

from visualrft_lite.draw import PALETTE
from visualrft_lite.tasks import get_task
from test_datasets import make_coco, make_flowers, no_network  # noqa: F401 (autouse: no downloads)


def test_data_show_flowers_prints_counts_classes_prompts_and_skips(tmp_path):
    base = make_flowers(tmp_path / "data")
    (base / "jpg" / "image_00006.jpg").unlink()  # a test image
    sheet = tmp_path / "sheet.png"
    result = invoke("data", "show", "--preset", "flowers-1shot", "--set", f"data.path={tmp_path / 'data'}",
                    "--out", sheet, "-n", "3")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "train: 3 records" in out and "eval: 5 records" in out
    assert "classes (3): canterbury bells: 1; hard-leaved pocket orchid: 1; pink primrose: 1" in out
    assert "This is an image containing a plant" in out
    assert "skipped 1 file: 1 missing image" in out and "image_00006.jpg: missing image (data.path)" in out
    # Three 12x8 images on one row of 256-pixel tiles (plus the caption strip).
    assert Image.open(sheet).size == (3 * 256, 256 + 44)


def test_data_show_draws_coco_boxes_in_original_pixels(tmp_path):
    root = make_coco(tmp_path / "coco")
    sheet = tmp_path / "coco.png"
    result = invoke("data", "show", "--preset", "coco-8cat-2shot", "--set", f"data.path={root}",
                    "--set", "data.categories=[bus]", "--set", "data.negatives=0", "--split", "train", "--out", sheet)
    assert result.exit_code == 0, result.output
    assert "train: 2 records" in result.output and "categories (1): bus: 2 with boxes, 0 no objects" in result.output
    # Image 1 is 40x30 with a bus at [1, 1, 11, 11]; its tile scales 40 -> 256 (6.4x): the box's
    # 2-pixel left edge (x = 1..2) lands at x = 6.4..19.2 of the first tile, in the first palette colour.
    im = Image.open(sheet).convert("RGB")
    offset_y = (256 - round(30 * 6.4)) // 2
    assert im.getpixel((8, offset_y + 40)) == PALETTE[0]
    assert im.getpixel((128, offset_y + 150)) != PALETTE[0]  # the middle of the image is not a box edge


def test_draw_truth_marks_each_task():
    blank = Image.new("RGB", (100, 100), (255, 255, 255))
    det = get_task("detect").draw_truth(blank, [(10, 20, 60, 80)], label="bus")
    assert det.getpixel((10, 50)) == PALETTE[0] and det.getpixel((35, 50)) == (255, 255, 255)
    ground = get_task("ground").draw_truth(blank, (30, 30, 90, 90), label="the cup")
    assert ground.getpixel((89, 60)) == PALETTE[0]
    cls = get_task("classify").draw_truth(blank, ("daisy",))
    assert cls.getpixel((1, 1)) == PALETTE[2] and blank.getpixel((1, 1)) == (255, 255, 255)


def test_data_show_errors_are_one_line(tmp_path):
    result = invoke("data", "show", "--preset", "flowers-1shot", "--set", f"data.path={tmp_path / 'none'}",
                    "--set", "data.download=false")
    assert_one_line_error(result, "Flowers102 not found")


def test_data_show_reports_a_split_that_fails_and_shows_the_other(tmp_path):
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "cat_to_name.json").write_text(json.dumps({"1": "a"}))
    base = make_flowers(tmp_path / "data")
    # Train on the official copy, eval on a folder that holds nothing usable.
    result = invoke("data", "show", "--preset", "flowers-1shot", "--set", f"data.path={base}",
                    "--set", f"data.eval_path={folder}")
    assert result.exit_code == 0, result.output
    assert "train: 3 records" in result.output and "eval: cannot load:" in result.output
