"""Images in, RGB out: every colour mode a dataset ships, and the boxes that go with them.

`load_image` is what the trainer calls per step; `probe_image` is the cheap check the data
sources run once per file at load time (header + `verify()`, no full decode), so a missing or
corrupt file is skipped and counted before training rather than crashing step 300.
Boxes are pixels `[x1, y1, x2, y2]` in the frame of the EXIF-oriented image, which is the
image `load_image` returns and the model sees.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visualrft_lite.errors import UserError

ImageSource = str | Path | bytes | Image.Image

# EXIF orientations 5-8 swap width and height (a 90° turn, with or without a mirror).
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}


class ImageLoadError(UserError):
    """An image that cannot be used; `reason` is the skip counter key."""

    def __init__(self, message: str, reason: Literal["missing image", "corrupt image"]) -> None:
        super().__init__(message)
        self.reason = reason


def _describe(src: ImageSource) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, bytes):
        return f"<{len(src)} bytes of image data>"
    return "<in-memory image>"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


def _open(src: ImageSource) -> Image.Image:
    """Open lazily (header only); errors become ImageLoadError with the skip reason."""
    if isinstance(src, Image.Image):
        return src
    where = _describe(src)
    try:
        if isinstance(src, bytes):
            return Image.open(io.BytesIO(src))
        return Image.open(Path(src))
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {where} (check the path, or data.image_root)", "missing image") from None
    except IsADirectoryError:
        raise ImageLoadError(f"image path is a directory, not a file: {where}", "missing image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"cannot read image {where}: {_one_line(e)} (re-export the file or remove it)", "corrupt image") from None


def probe_image(src: ImageSource) -> tuple[int, int]:
    """(width, height) as `load_image` will return it, checked cheaply: header + `verify()`.

    `verify()` checks PNG chunk CRCs but not JPEG entropy data, so a truncated JPEG can pass
    here and fail later in `load_image` (the trainer skips it and counts it then).
    """
    if not isinstance(src, Image.Image):
        im = _open(src)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im.verify()  # must come straight after open; leaves `im` unusable
        except Exception as e:  # verify() raises a zoo of types (SyntaxError, struct.error, ...)
            raise ImageLoadError(
                f"cannot read image {_describe(src)}: {_one_line(e)} (re-export the file or remove it)", "corrupt image"
            ) from None
        finally:
            im.close()
    im = _open(src)  # header again, for the size and the EXIF orientation
    try:
        size = im.size
        try:
            orientation = im.getexif().get(_ORIENTATION_TAG, 1)
        except Exception:  # a broken EXIF block is not a broken image
            orientation = 1
    finally:
        if not isinstance(src, Image.Image):
            im.close()
    if size[0] <= 0 or size[1] <= 0:
        raise ImageLoadError(f"image {_describe(src)} has zero size {size}", "corrupt image")
    return (size[1], size[0]) if orientation in _SWAPS_AXES else size


def _gray_to_uint8(im: Image.Image) -> Image.Image:
    """Integer/float grayscale (I;16*, I, F) to 8-bit L by scaling, never by clipping.

    16-bit data uses the full range: v / 257 maps 0..65535 onto 0..255 exactly (65535 = 255·257).
    32-bit "I" holding 0..255 is kept, holding 0..65535 is scaled like 16-bit, anything else
    is stretched min..max. Float "F" in 0..1 is scaled by 255.
    """
    a = np.asarray(im).astype(np.float64)  # [H, W]
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode.startswith("I;16"):
        a = a / 257.0
    elif im.mode == "F" and lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass
    elif im.mode == "I" and lo >= 0.0 and hi <= 65535.0:
        a = a / 257.0
    else:
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    a = np.nan_to_num(a, nan=0.0)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: alpha composited on white, palettes expanded, 16-bit scaled."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I") or mode == "F":
        return _gray_to_uint8(im).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        # P/L/RGB with a transparent colour (tRNS) also composite: the key colour becomes white.
        return _composite_on_white(im)
    try:
        return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGBX, ...
    except ValueError as e:
        raise ImageLoadError(f"unsupported colour mode {mode}: {_one_line(e)} (convert the image to RGB)", "corrupt image") from None


def load_image(src: ImageSource) -> Image.Image:
    """The image as RGB, EXIF orientation applied; ImageLoadError for missing/corrupt files.

    >>> load_image(Image.new("RGBA", (2, 2), (0, 0, 0, 0))).getpixel((0, 0))
    (255, 255, 255)
    """
    im = _open(src)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
            oriented = ImageOps.exif_transpose(im)
        out = to_rgb(oriented)
        if out is im:  # closing `im` below would free the pixels we return
            out = im.copy()
        return out
    except ImageLoadError:
        raise
    except Exception as e:  # truncated data, bad EXIF, decoder errors
        raise ImageLoadError(
            f"cannot read image {_describe(src)}: {_one_line(e)} (re-export the file or remove it)", "corrupt image"
        ) from None
    finally:
        if not isinstance(src, Image.Image):
            im.close()


def clip_box(box: Sequence[float], size: tuple[int, int]) -> list[float] | None:
    """A pixel box [x1, y1, x2, y2] clipped to a (width, height) image; None if no area is left.

    >>> clip_box([-5, 10, 50, 300], (40, 200))
    [0.0, 10.0, 40.0, 200.0]
    >>> clip_box([50, 10, 60, 20], (40, 200)) is None
    True
    """
    if len(box) != 4:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None
    w, h = size
    x1, x2 = min(max(x1, 0.0), float(w)), min(max(x2, 0.0), float(w))
    y1, y2 = min(max(y1, 0.0), float(h)), min(max(y2, 0.0), float(h))
    if x2 <= x1 or y2 <= y1:
        return None
    return [x1, y1, x2, y2]


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    """COCO's [x, y, width, height] to [x1, y1, x2, y2]."""
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def sample_sizes(records: Sequence[Any], n: int = 64) -> list[tuple[int, int]]:
    """(width, height) of up to `n` records spread over the list: each one's known image_size,
    else its file's header as `probe_image` reads it; unreadable images are left out."""
    step = max(1, len(records) / n) if records else 1
    sizes = []
    for rec in (records[int(i * step)] for i in range(min(n, len(records)))):
        if rec.image_size:
            sizes.append(tuple(rec.image_size))
            continue
        try:
            sizes.append(probe_image(rec.image))
        except ImageLoadError:
            continue
    return sizes
