"""Drawing on images (Pillow only): the marks every task draws with, captions and grids.

Boxes and points arrive in pixels of the original image (a task's `parse_answer` and
`parse_truth`), so a drawing is the original size and the marks land where the model meant
them. Which marks a task makes is the task's (`Task.draw_answer`, `Task.draw_truth`); this
module holds the marks themselves: boxes with a tag, rings, corner tags, and the caption and
grid that `samples` lays a group out with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

Colour = tuple[int, int, int]
PALETTE: list[Colour] = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                         (70, 240, 240), (240, 50, 230), (210, 245, 60)]
TRUTH_COLOUR: Colour = (34, 160, 60)  # green: the ground truth
PREDICTION_COLOUR: Colour = (220, 30, 60)  # red: what the completion said
TEXT_COLOUR: Colour = PALETTE[2]  # a class name, count or letter in a corner tag


@dataclass
class Canvas:
    """A copy of an image to draw on, with line width and font scaled to its size."""

    image: Image.Image
    draw: ImageDraw.ImageDraw
    font: Any
    width: int

    @classmethod
    def of(cls, image: Image.Image, *, line_divisor: int = 200) -> Canvas:
        """`line_divisor`: lines are min(side) / divisor wide (at least 2): 200 for answers, 100 for
        ground truth meant to stay visible in a thumbnail."""
        out = image.convert("RGB").copy()
        return cls(out, ImageDraw.Draw(out), _fixed_font(max(10, min(out.size) // 30)),
                   max(2, round(min(out.size) / line_divisor)))

    def box(self, box: Sequence[float], colour: Colour, text: str | None = None, *, tag_at: str = "top") -> None:
        """A rectangle, tagged with `text` above its top-left corner (`tag_at="bottom"`: at its bottom-left)."""
        self.draw.rectangle(list(box), outline=colour, width=self.width)
        if text:
            self.tag((box[0], box[1] if tag_at == "top" else box[3]), _short(text), colour)

    def ring(self, point: Sequence[float], colour: Colour) -> None:
        """A ring with a dot at its centre."""
        x, y = point
        radius = max(3, min(self.image.size) // 60)
        self.draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=colour, width=self.width)
        self.draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=colour)

    def corner(self, text: str, colour: Colour, *, bottom: bool = False) -> None:
        """A tag in the top-left corner (answers), or the bottom-left one (truths)."""
        self.tag((0, self.image.size[1] if bottom else 0), _short(text), colour)

    def tag(self, xy: tuple[float, float], text: str, colour: Colour) -> None:
        """Text on a filled tag, above the anchor if there is room, else just below it."""
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=self.font)
        w, h = right - left + 4, bottom - top + 4
        size = self.image.size
        x = min(max(xy[0], 0), max(size[0] - w, 0))
        y = xy[1] - h if xy[1] - h >= 0 else min(xy[1], max(size[1] - h, 0))
        self.draw.rectangle([x, y, x + w, y + h], fill=colour)
        self.draw.text((x + 2 - left, y + 2 - top), text, fill=(255, 255, 255), font=self.font)


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
