"""Drawing a parsed answer onto the original image (Pillow only), for `predict --draw`.

Boxes and points arrive in pixels of the original image (`rewards.parse_prediction`), so
the drawing is the original size and the marks land where the model meant them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60)]


def _font(image: Image.Image) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = max(10, min(image.size) // 30)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: tuple[int, int, int],
           font: Any, image_size: tuple[int, int]) -> None:
    """Text on a filled tag, above the anchor if there is room, else just below it."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, bottom - top + 4
    x = min(max(xy[0], 0), max(image_size[0] - w, 0))
    y = xy[1] - h if xy[1] - h >= 0 else min(xy[1], max(image_size[1] - h, 0))
    draw.rectangle([x, y, x + w, y + h], fill=colour)
    draw.text((x + 2 - left, y + 2 - top), text, fill=(255, 255, 255), font=font)


def draw_answer(image: Image.Image, task: str, parsed: Any, *, label: str | None = None) -> Image.Image:
    """A copy of `image` with the answer drawn on it.

    detect: [(box, confidence)] -> boxes tagged "label 0.93"; ground: box -> box tagged with
    `label`; point: [(x, y)] -> rings; classify/count/choice: the answer in a corner tag.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(out)
    width = max(2, round(min(out.size) / 200))
    if task == "detect":
        for k, (box, confidence) in enumerate(parsed):
            colour = PALETTE[k % len(PALETTE)]
            draw.rectangle(list(box), outline=colour, width=width)
            _label(draw, (box[0], box[1]), f"{label or 'object'} {confidence:.2f}", colour, font, out.size)
    elif task == "ground":
        if parsed is not None:
            draw.rectangle(list(parsed), outline=PALETTE[0], width=width)
            _label(draw, (parsed[0], parsed[1]), _short(label or "target"), PALETTE[0], font, out.size)
    elif task == "point":
        radius = max(3, min(out.size) // 60)
        for k, (x, y) in enumerate(parsed):
            colour = PALETTE[k % len(PALETTE)]
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=colour, width=width)
            draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=colour)
    else:
        text = "no answer" if parsed is None else str(parsed)
        _label(draw, (0, 0), _short(text), PALETTE[2], font, out.size)
    return out


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
