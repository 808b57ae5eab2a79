"""Drawing answers onto the original image (Pillow only), for `predict --draw` and `samples`.

Boxes and points arrive in pixels of the original image (`rewards.parse_prediction`,
`answers.parse_solution`), so the drawing is the original size and the marks land where the
model meant them. `samples` draws the ground truth in one colour and a completion's answer
in another (`mark_truth`, `draw_answer(colour=...)`), captions each tile and lays a group
out as one grid (`caption`, `grid`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60)]
TRUTH_COLOUR = (34, 160, 60)  # green: the ground truth
PREDICTION_COLOUR = (220, 30, 60)  # red: what the completion said


def _font(image: Image.Image) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return _fixed_font(max(10, min(image.size) // 30))


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: tuple[int, int, int],
           font: Any, image_size: tuple[int, int]) -> None:
    """Text on a filled tag, above the anchor if there is room, else just below it."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, bottom - top + 4
    x = min(max(xy[0], 0), max(image_size[0] - w, 0))
    y = xy[1] - h if xy[1] - h >= 0 else min(xy[1], max(image_size[1] - h, 0))
    draw.rectangle([x, y, x + w, y + h], fill=colour)
    draw.text((x + 2 - left, y + 2 - top), text, fill=(255, 255, 255), font=font)


def draw_answer(image: Image.Image, task: str, parsed: Any, *, label: str | None = None,
                colour: tuple[int, int, int] | None = None) -> Image.Image:
    """A copy of `image` with the answer drawn on it.

    detect: [(box, confidence)] -> boxes tagged "label 0.93"; ground: box -> box tagged with
    `label`; point: [(x, y)] -> rings; classify/count/choice: the answer in a corner tag.
    Marks cycle through PALETTE, or all take `colour` when given.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(out)
    width = max(2, round(min(out.size) / 200))
    if task == "detect":
        for k, (box, confidence) in enumerate(parsed):
            c = colour or PALETTE[k % len(PALETTE)]
            draw.rectangle(list(box), outline=c, width=width)
            _label(draw, (box[0], box[1]), f"{label or 'object'} {confidence:.2f}", c, font, out.size)
    elif task == "ground":
        if parsed is not None:
            c = colour or PALETTE[0]
            draw.rectangle(list(parsed), outline=c, width=width)
            _label(draw, (parsed[0], parsed[1]), _short(label or "target"), c, font, out.size)
    elif task == "point":
        radius = max(3, min(out.size) // 60)
        for k, (x, y) in enumerate(parsed):
            c = colour or PALETTE[k % len(PALETTE)]
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=c, width=width)
            draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=c)
    else:
        text = "no answer" if parsed is None else str(parsed)
        _label(draw, (0, 0), _short(text), colour or PALETTE[2], font, out.size)
    return out


def mark_truth(image: Image.Image, task: str, truth: Any, *,
               colour: tuple[int, int, int] = TRUTH_COLOUR) -> Image.Image:
    """A copy of `image` with the parsed ground truth (`answers.parse_solution`'s form) drawn in
    one `colour`, for comparing with an answer drawn over it (`draw_truth` draws a record's).

    detect: pixel boxes, untagged; ground/point: the target box tagged "truth"; classify: the
    first name, count: the number, choice: the letter, in a tag at the bottom-left corner
    (`draw_answer` puts an answer at the top-left).
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(out)
    width = max(2, round(min(out.size) / 200))
    if task == "detect":
        for box in truth:
            draw.rectangle(list(box), outline=colour, width=width)
    elif task in ("ground", "point"):
        draw.rectangle(list(truth), outline=colour, width=width)
        _label(draw, (truth[0], truth[3]), "truth", colour, font, out.size)
    else:
        text = truth[0] if isinstance(truth, tuple) else str(truth)
        _label(draw, (0, out.size[1]), _short(f"truth: {text}"), colour, font, out.size)
    return out


def caption(image: Image.Image, lines: list[str], *, max_side: int = 320) -> Image.Image:
    """`image` scaled to fit `max_side`, with `lines` of text on a white strip below it."""
    tile = image.convert("RGB").copy()
    tile.thumbnail((max_side, max_side))
    font = _fixed_font(13)
    line_h = 17
    out = Image.new("RGB", (max(tile.width, max_side), tile.height + 6 + line_h * len(lines)), "white")
    out.paste(tile, ((out.width - tile.width) // 2, 0))
    draw = ImageDraw.Draw(out)
    for k, text in enumerate(lines):
        draw.text((4, tile.height + 3 + k * line_h), _short(text, 52), fill=(20, 20, 20), font=font)
    return out


def grid(tiles: list[Image.Image], *, columns: int = 4, title: str = "") -> Image.Image:
    """Tiles laid out row by row, `columns` to a row, under a one-line title."""
    if not tiles:
        raise ValueError("grid needs at least one tile")
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    cell_w, cell_h = max(t.width for t in tiles), max(t.height for t in tiles)
    gap, head = 6, 28 if title else 0
    font = _fixed_font(16)
    title_w = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font)) + 2 * gap if title else 0
    out = Image.new("RGB", (max(columns * cell_w + (columns + 1) * gap, title_w),
                            head + rows * cell_h + (rows + 1) * gap), (235, 235, 235))
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((gap, 6), title, fill=(0, 0, 0), font=font)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        out.paste(tile, (gap + c * (cell_w + gap), head + gap + r * (cell_h + gap)))
    return out


def _fixed_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def drawing_paths(target: Path, images: list[str]) -> list[Path]:
    """Where `--draw TARGET` writes each image's drawing.

    One image: TARGET itself. Several: TARGET-1.png, TARGET-2.png, ... in argument order
    (TARGET's suffix is kept, .png if it has none). An existing directory: DIR/<image
    stem>.png, with -2, -3 ... added when stems repeat.
    """
    if target.is_dir():
        seen: dict[str, int] = {}
        paths = []
        for name in images:
            stem = Path(name).stem or "image"
            seen[stem] = seen.get(stem, 0) + 1
            paths.append(target / (f"{stem}.png" if seen[stem] == 1 else f"{stem}-{seen[stem]}.png"))
        return paths
    if len(images) == 1:
        return [target]
    suffix = target.suffix or ".png"
    return [target.with_name(f"{target.stem}-{n}{suffix}") for n in range(1, len(images) + 1)]


def draw_truth(image: Image.Image, task: str, solution: Any, *, label: str | None = None) -> Image.Image:
    """A copy of `image` with a record's ground truth drawn, in the original image's pixels.

    detect: pixel boxes [x1, y1, x2, y2] tagged `label` ("No Objects" when there are none);
    ground/point: the target box tagged `label` (the instruction); classify: {"label"} in a
    corner tag; count/choice: the answer in a corner tag. Lines scale with the image so they
    stay visible in a thumbnail.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(out)
    width = max(2, round(min(out.size) / 100))
    if task == "detect":
        for k, box in enumerate(solution):
            colour = PALETTE[k % len(PALETTE)]
            draw.rectangle(list(box), outline=colour, width=width)
            _label(draw, (box[0], box[1]), _short(label or "object"), colour, font, out.size)
        if not solution:
            _label(draw, (0, 0), _short(f"{label or 'object'}: No Objects"), PALETTE[2], font, out.size)
    elif task in ("ground", "point"):
        draw.rectangle(list(solution), outline=PALETTE[0], width=width)
        _label(draw, (solution[0], solution[1]), _short(label or "target"), PALETTE[0], font, out.size)
    else:
        text = solution["label"] if isinstance(solution, dict) else str(solution)
        _label(draw, (0, 0), _short(text), PALETTE[2], font, out.size)
    return out
