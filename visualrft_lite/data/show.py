"""`vrft-lite data show`: the records exactly as training loads them, before any GPU time.

Prints, per split: the record count, the classes or categories with counts, a few example
prompts, the image tokens per image (what the model's processor will make of them), and the
skipped files by reason; and draws a contact sheet of N records with their
ground truth (labels, boxes, points) in original-image pixels, so a wrong coordinate
convention, a swapped label map or an empty split shows up at once.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from PIL import Image, ImageDraw, ImageFont

from visualrft_lite.data.common import LoadResult
from visualrft_lite.data.images import ImageLoadError, load_image, sample_sizes
from visualrft_lite.data.records import Record
from visualrft_lite.data.skips import skipped_lines
from visualrft_lite.data.sources import load_records
from visualrft_lite.errors import UserError
from visualrft_lite.image_tokens import TokenBudget
from visualrft_lite.prompts import render_prompt
from visualrft_lite.tasks import get_task

if TYPE_CHECKING:
    from visualrft_lite.config import Config

Split = Literal["train", "eval"]


def caption_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def group_counts(records: Sequence[Record]) -> tuple[str, dict[str, str]]:
    """How the task counts its records: ('classes', {label: "12"}), ('categories', {...}) or ('images', {})."""
    return get_task(records[0].task).group_counts(records) if records else ("images", {})


def draw_record(rec: Record) -> Image.Image:
    """The record's image with its ground truth drawn in original-image pixels."""
    task = get_task(rec.task)
    image = load_image(rec.image)
    truth = task.parse_truth(rec.solution, image_size=rec.image_size or image.size)
    return task.draw_truth(image, truth, label=task.truth_label(rec))


def describe(result: LoadResult, split: Split, cfg: Config, examples: int = 2, listed: int = 20,
             budget: TokenBudget | str | None = None) -> list[str]:
    """The console lines for one split; `budget` adds its image tokens per image (a string: why
    they cannot be told)."""
    lines = [f"{split}: {len(result.records)} records"]
    what, counts = group_counts(result.records)
    if what == "images" and result.records:
        images = len({r.image_name for r in result.records})
        lines.append(f"  {images} image{'s' if images != 1 else ''}, {len(result.records)} {result.records[0].task} records")
    elif counts:
        shown = "; ".join(f"{name}: {n}" for name, n in sorted(counts.items())[:listed])
        more = f"; ... {len(counts) - listed} more" if len(counts) > listed else ""
        lines.append(f"  {what} ({len(counts)}): {shown}{more}")
    for rec in pick(result.records, examples):
        prompt = render_prompt(rec, cfg.data.prompt, coords=cfg.model.coords)
        lines.append(f"  example prompt ({rec.image_name}): {' '.join(prompt.split())[:300]}")
    if isinstance(budget, TokenBudget):
        lines.append(f"  {budget.describe(sample_sizes(result.records))}")
    elif budget:
        lines.append(f"  image tokens per image: not known ({budget})")
    file_reasons = {e.reason for e in result.files}
    other = {reason: n for reason, n in result.skipped.items() if reason not in file_reasons}
    lines += ["  " + line for line in skipped_lines(result.files)]
    if other:
        lines.append("  also: " + ", ".join(f"{n} {reason}" for reason, n in sorted(other.items())))
    return lines


def pick(records: Sequence[Record], n: int) -> list[Record]:
    """n records spread evenly over the list (so every class or category is likely to appear)."""
    if len(records) <= n:
        return list(records)
    step = len(records) / n
    return [records[int(i * step)] for i in range(n)]


def fit(image: Image.Image, tile: int) -> Image.Image:
    """Scale to fit a tile x tile square, aspect kept: smooth when shrinking, blocky (exact) when
    enlarging a small image."""
    scale = min(tile / image.width, tile / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)


def contact_sheet(records: Sequence[Record], out: Path, n: int = 16, tile: int = 256) -> Path:
    """A grid of n records, each drawn with its ground truth at full size and then shrunk to
    `tile` pixels, with its label (and file name) written underneath."""
    chosen = pick(records, n)
    if not chosen:
        raise UserError("no records to draw; check the data section (vrft-lite data show prints what was skipped)")
    cols = min(4, len(chosen))
    rows = (len(chosen) + cols - 1) // cols
    caption = 44
    sheet = Image.new("RGB", (cols * tile, rows * (tile + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = caption_font()
    for i, rec in enumerate(chosen):
        x, y = (i % cols) * tile, (i // cols) * (tile + caption)
        try:
            drawn = draw_record(rec)
        except ImageLoadError as e:
            drawn = Image.new("RGB", (tile, tile), (240, 240, 240))
            ImageDraw.Draw(drawn).text((4, 4), textwrap.fill(str(e), 40), fill=(200, 0, 0), font=font)
        drawn = fit(drawn, tile)
        sheet.paste(drawn, (x + (tile - drawn.width) // 2, y + (tile - drawn.height) // 2))
        label = textwrap.shorten(get_task(rec.task).truth_label(rec), 40, placeholder="...")
        draw.multiline_text((x + 3, y + tile + 2), f"{label}\n{Path(rec.image_name).name[:40]}", fill=(0, 0, 0), font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def show(cfg: Config, *, splits: Sequence[Split] = ("train", "eval"), out: Path | None = None, n: int = 16,
         sheet_split: Split = "train",
         budget: TokenBudget | str | None = None) -> tuple[list[str], dict[str, LoadResult]]:
    """Load each split as train/eval would; returns the console lines and the load results
    (with `budget`, each split's image tokens per image over a sample of its images).

    A split that fails to load prints its one-line error instead (the other is still shown);
    if every split fails the first error is raised.
    """
    lines: list[str] = [f"{cfg.name}: data.source={cfg.data.source} data.path={cfg.data.path or '(empty)'} "
                        f"task={cfg.data.task}"]
    results: dict[str, LoadResult] = {}
    errors: list[UserError] = []
    for split in splits:
        try:
            results[split] = load_records(cfg.data, split)
        except UserError as e:
            errors.append(e)
            lines.append(f"{split}: cannot load: {e}")
            continue
        lines += describe(results[split], split, cfg, budget=budget)
    if not results:
        raise errors[0]
    if out is not None:
        which = sheet_split if sheet_split in results else next(iter(results))
        path = contact_sheet(results[which].records, out, n=n)
        lines.append(f"wrote {path} ({min(n, len(results[which].records))} {which} records, ground truth drawn)")
    return lines, results
