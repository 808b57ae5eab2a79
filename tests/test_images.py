"""load_image (every colour mode to RGB, EXIF, errors), probe_image and clip_box."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualrft_lite.data.images import ImageLoadError, clip_box, load_image, probe_image, xywh_to_xyxy
from visualrft_lite.errors import UserError


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _palette_image(transparent: bool) -> Image.Image:
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, 1 blue
    im.putdata([0, 1])
    if transparent:
        im.info["transparency"] = 1  # blue is the transparent key
    return im


def _gray16(values: list[int]) -> Image.Image:
    return Image.fromarray(np.array([values], dtype=np.uint16))  # mode I;16


def _saved(tmp_path: Path, im: Image.Image, name: str, **kw) -> Path:
    path = tmp_path / name
    im.save(path, **kw)
    return path


# (case, image factory, file name or None for in-memory, expected RGB pixels along row 0, tolerance)
CONVERSIONS = [
    # RGB is returned unchanged.
    ("rgb", lambda: Image.new("RGB", (1, 1), (10, 20, 30)), "a.png", [(10, 20, 30)], 0),
    # Half-transparent red on white: 0·128/255 + 255·127/255 = 127 for G and B.
    ("rgba half alpha", lambda: Image.new("RGBA", (1, 1), (255, 0, 0, 128)), "a.png", [(255, 127, 127)], 1),
    # Fully transparent pixels become the white background, whatever colour they hold.
    ("rgba transparent", lambda: Image.new("RGBA", (1, 1), (0, 0, 0, 0)), "a.png", [(255, 255, 255)], 0),
    # Gray + alpha: opaque black stays black.
    ("LA opaque", lambda: Image.new("LA", (1, 1), (0, 255)), "a.png", [(0, 0, 0)], 0),
    # Palette without transparency expands to its colours.
    ("palette", lambda: _palette_image(False), "a.png", [(255, 0, 0), (0, 0, 255)], 0),
    # Palette with a transparent index: that index becomes white, not its palette colour (blue).
    ("palette transparent", lambda: _palette_image(True), "a.png", [(255, 0, 0), (255, 255, 255)], 0),
    # CMYK (0, 255, 0, 0) is magenta; TIFF keeps it lossless.
    ("cmyk tiff", lambda: Image.new("CMYK", (1, 1), (0, 255, 0, 0)), "a.tif", [(255, 0, 255)], 0),
    # CMYK JPEG (Adobe-inverted on disk) decodes to the same colour, give or take JPEG loss.
    ("cmyk jpeg", lambda: Image.new("CMYK", (8, 8), (0, 255, 0, 0)), "a.jpg", [(255, 0, 255)], 8),
    # 16-bit gray scales by 1/257: 0→0, 25700→100, 65535→255, and 1000→4 (clipping would give 255).
    ("gray16 png", lambda: _gray16([0, 25700, 65535, 1000]), "a.png",
     [(0, 0, 0), (100, 100, 100), (255, 255, 255), (4, 4, 4)], 0),
    # 32-bit "I" holding 16-bit data is scaled the same way.
    ("gray I 16-bit range", lambda: Image.fromarray(np.array([[65535, 257]], dtype=np.int32)), None,
     [(255, 255, 255), (1, 1, 1)], 0),
    # 32-bit "I" already in 0..255 is kept (a plain 8-bit image widened).
    ("gray I 8-bit range", lambda: Image.fromarray(np.array([[7, 200]], dtype=np.int32)), None,
     [(7, 7, 7), (200, 200, 200)], 0),
    # Float in 0..1 scales by 255: 0.5 → 127.5 → 128.
    ("float 0..1", lambda: Image.fromarray(np.array([[0.5, 1.0]], dtype=np.float32)), None,
     [(128, 128, 128), (255, 255, 255)], 0),
    # 8-bit gray and 1-bit images are replicated to three channels.
    ("L", lambda: Image.new("L", (1, 1), 77), "a.png", [(77, 77, 77)], 0),
    ("1-bit", lambda: Image.new("1", (1, 1), 1), "a.png", [(255, 255, 255)], 0),
]


@pytest.mark.parametrize("case,make,name,expected,tol", CONVERSIONS, ids=[c[0] for c in CONVERSIONS])
def test_load_image_converts_to_rgb(tmp_path, case, make, name, expected, tol):
    src = make() if name is None else _saved(tmp_path, make(), name)
    im = load_image(src)
    assert im.mode == "RGB"
    for x, want in enumerate(expected):
        got = im.getpixel((x, 0))
        assert all(abs(g - w) <= tol for g, w in zip(got, want)), (case, x, got, want)


def test_sixteen_bit_png_really_is_read_as_16_bit(tmp_path):
    # Guards the table above: if Pillow opened it as 8-bit, the 1/257 scaling would be untested.
    path = _saved(tmp_path, _gray16([0, 65535]), "g.png")
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")


def test_exif_orientation_is_applied(tmp_path):
    # Orientation 6 = "rotate 90° clockwise to display": a 4x2 image shows as 2x4 and the
    # raw top-left pixel lands at the top-right.
    im = Image.new("RGB", (4, 2), (0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _saved(tmp_path, im, "o.png", exif=exif.tobytes())
    out = load_image(path)
    assert out.size == (2, 4)
    assert out.getpixel((1, 0)) == (255, 0, 0)
    assert probe_image(path) == (2, 4)  # the probe reports the size the model will see


def test_bytes_and_pil_sources(tmp_path):
    rgba = Image.new("RGBA", (3, 2), (0, 0, 255, 0))
    assert load_image(_png_bytes(rgba)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(rgba).size == (3, 2)
    assert probe_image(_png_bytes(rgba)) == (3, 2)


def _truncated_png(tmp_path: Path) -> Path:
    data = _png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    return path


# (case, source factory, expected reason) — each must raise a one-line ImageLoadError.
BAD_IMAGES = [
    # A path that does not exist is "missing", so a run can report how many were missing.
    ("missing file", lambda p: p / "nope.jpg", "missing image"),
    # A directory where a file should be is a missing image too.
    ("directory", lambda p: p, "missing image"),
    # Text saved as .jpg: Pillow cannot identify it.
    ("not an image", lambda p: (p / "x.jpg", (p / "x.jpg").write_text("hello\nworld"))[0], "corrupt image"),
    # An empty file.
    ("empty file", lambda p: (p / "e.png", (p / "e.png").write_bytes(b""))[0], "corrupt image"),
    # A PNG cut in half: header fine, data gone.
    ("truncated png", _truncated_png, "corrupt image"),
    # Garbage bytes (hub data with a broken cell).
    ("garbage bytes", lambda p: b"\x00\x01garbage", "corrupt image"),
]


@pytest.mark.parametrize("case,make,reason", BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_bad_images_raise_one_line_errors(tmp_path, case, make, reason):
    src = make(tmp_path)
    for fn in (load_image, probe_image):
        with pytest.raises(ImageLoadError) as e:
            fn(src)
        assert isinstance(e.value, UserError)
        assert e.value.reason == reason
        assert "\n" not in str(e.value) and str(e.value)
        if isinstance(src, Path):
            assert str(src) in str(e.value)  # names the file


CLIPS = [
    # Inside the image: unchanged (as floats).
    ([1, 2, 30, 40], (100, 50), [1.0, 2.0, 30.0, 40.0]),
    # Sticking out left and bottom: clipped to 0 and the height.
    ([-5, 10, 50, 300], (40, 200), [0.0, 10.0, 40.0, 200.0]),
    # Entirely right of the image: nothing left.
    ([50, 10, 60, 20], (40, 200), None),
    # Zero width.
    ([5, 5, 5, 9], (40, 40), None),
    # Inverted corners (x2 < x1): negative area.
    ([9, 5, 5, 9], (40, 40), None),
    # NaN coordinates never become a box.
    ([math.nan, 0, 5, 5], (40, 40), None),
    # Not four numbers.
    ([1, 2, 3], (40, 40), None),
]


@pytest.mark.parametrize("box,size,expected", CLIPS)
def test_clip_box(box, size, expected):
    assert clip_box(box, size) == expected


def test_xywh_to_xyxy():
    # COCO [x, y, w, h] = [10, 20, 30, 40] spans x 10..40, y 20..60.
    assert xywh_to_xyxy([10, 20, 30, 40]) == [10.0, 20.0, 40.0, 60.0]
