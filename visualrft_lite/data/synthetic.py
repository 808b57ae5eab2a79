"""A seeded synthetic shapes dataset: the demo's and the tests' data, made in about a second.

`make_shapes(root)` writes coloured shapes on noisy backgrounds, one folder per task:

    classify/{train,test}/<shape>/*.png            one big shape per image; class = shape name
    detect/{train,test}.json + detect/images/      COCO instances, 1-4 shapes per image; an image
                                                   lacking a category is that category's negative
    ground/{train,test}.jsonl + ground/images/     {"image", "task": "ground", "query": "the red
                                                   circle", "solution": [x1, y1, x2, y2]} (pixels)
    count/{train,test}.jsonl + count/images/       {"image", "task": "count", "query": "How many
                                                   circles are in the image?", "solution": 3}
    shapes.json                                    the parameters; written last (the "complete" marker)

Everything follows from the parameters: each (task, split) draws from its own
`numpy` generator seeded by (seed, task, split), so adding a task never changes another.
Boxes are the exact pixel extent of the drawn shape (x2, y2 exclusive, so COCO's w = x2 - x1);
shapes in one image never overlap.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}
# Classification gives each shape its own colour: the demo's tiny model has a random, frozen
# vision tower, and a colour cue is what such features reliably carry, so accuracy can rise
# within a CPU demo. Scenes (detect / ground / count) keep random colours.
CLASS_COLOURS: dict[str, str] = {"circle": "red", "square": "blue", "triangle": "green", "star": "yellow"}
GENERATOR_VERSION = 2  # bump when the drawing changes: a cached dataset is then rebuilt
MARKER = "shapes.json"
TASK_IDS = {"classify": 0, "detect": 1, "ground": 2, "count": 3}
SPLIT_IDS = {"train": 0, "test": 1}

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, exclusive of x2/y2


@dataclass(frozen=True)
class Placed:
    """One drawn shape: what it is and its pixel box [x1, y1, x2, y2]."""

    shape: str
    colour: str
    box: Box


def _rng(seed: int, task: str, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, TASK_IDS[task], SPLIT_IDS[split]])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted two-tone gradient plus Gaussian noise; [H, W, 3] float32 in 0..255."""
    lo, hi = rng.uniform(90, 200, size=3), rng.uniform(90, 200, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = (np.cos(angle) * xs + np.sin(angle) * ys)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)  # [H, W] in 0..1
    img = lo[None, None, :] * (1 - t[..., None]) + hi[None, None, :] * t[..., None]
    # desaturate towards grey so every shape colour stands out
    grey = img.mean(axis=2, keepdims=True)
    return (0.35 * img + 0.65 * grey).astype(np.float32)


def _outline(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of circumradius r centred at (cx, cy)."""
    if shape == "circle":
        n, radii = 48, [r]
    elif shape == "square":
        n, radii, rot = 4, [r], rot + math.pi / 4  # axis-aligned when rot == 0
    elif shape == "triangle":
        n, radii, rot = 3, [r], rot - math.pi / 2  # apex up when rot == 0
    elif shape == "star":
        n, radii, rot = 10, [r, 0.45 * r], rot - math.pi / 2
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    return [
        (cx + radii[i % len(radii)] * math.cos(rot + 2 * math.pi * i / n),
         cy + radii[i % len(radii)] * math.sin(rot + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _box_of(points: list[tuple[float, float]], size: int) -> Box:
    """The exact extent of the filled polygon as PIL rasterises it (x2, y2 exclusive)."""
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    box = mask.getbbox()
    if box is None:  # pragma: no cover - radii are several pixels
        raise RuntimeError("a shape rasterised to no pixels")
    return box

def _overlaps(a: Box, b: Box, gap: int) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _place(
    rng: np.random.Generator, items: list[tuple[str, str]], size: int, r_range: tuple[float, float]
) -> list[tuple[Placed, list[tuple[float, float]]]]:
    """Non-overlapping positions for (shape, colour) items; smaller shapes when space is tight."""
    placed: list[tuple[Placed, list[tuple[float, float]]]] = []
    for shape, colour in items:
        lo, hi = r_range
        for attempt in range(200):
            shrink = 0.7 ** (attempt // 50)  # after 50 misses, try smaller shapes
            r = rng.uniform(lo, hi) * shrink
            cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
            rot = rng.uniform(-0.25, 0.25) if shape in ("triangle", "star") else 0.0
            points = _outline(shape, float(cx), float(cy), float(r), float(rot))
            box = _box_of(points, size)
            if not any(_overlaps(box, p.box, gap=2) for p, _ in placed):
                placed.append((Placed(shape, colour, box), points))
                break
        else:  # pragma: no cover - sizes are chosen so this never happens at the defaults
            raise RuntimeError(f"could not place {len(items)} shapes in a {size}px image")
    return placed


def _render(
    rng: np.random.Generator, size: int, placed: list[tuple[Placed, list[tuple[float, float]]]]
) -> Image.Image:
    canvas = Image.fromarray(np.clip(_background(rng, size), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for p, points in placed:
        jitter = rng.integers(-20, 21, size=3)
        fill = tuple(int(v) for v in np.clip(np.array(COLOURS[p.colour]) + jitter, 0, 255))
        draw.polygon(points, fill=fill)
    noisy = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 6, size=(size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8), "RGB")


def _save(img: Image.Image, path: Path) -> None:
    img.save(path, format="PNG", optimize=False, compress_level=1)


def _pick(rng: np.random.Generator, seq: tuple[str, ...] | list[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _write_classify(root: Path, seed: int, size: int, counts: dict[str, int]) -> None:
    for split, per_class in counts.items():
        rng = _rng(seed, "classify", split)
        for shape in SHAPES:
            folder = root / "classify" / split / shape
            folder.mkdir(parents=True)
            for i in range(per_class):
                items = [(shape, CLASS_COLOURS[shape])]
                placed = _place(rng, items, size, (0.22 * size, 0.4 * size))
                _save(_render(rng, size, placed), folder / f"{shape}_{i:04d}.png")


def _scene_images(
    rng: np.random.Generator, n: int, size: int, n_shapes: tuple[int, int], r_range: tuple[float, float],
    unique: bool = False,
) -> Iterator[tuple[Image.Image, list[Placed]]]:
    """n images of n_shapes[0]..n_shapes[1] random shapes; `unique`: no (colour, shape) twice."""
    combos = [(s, c) for s in SHAPES for c in COLOURS]
    for _ in range(n):
        k = int(rng.integers(n_shapes[0], n_shapes[1] + 1))
        if unique:
            idx = rng.choice(len(combos), size=k, replace=False)
            items = [combos[int(j)] for j in idx]
        else:
            items = [(_pick(rng, SHAPES), _pick(rng, list(COLOURS))) for _ in range(k)]
        placed = _place(rng, items, size, r_range)
        yield _render(rng, size, placed), [p for p, _ in placed]


def _write_detect(root: Path, seed: int, size: int, counts: dict[str, int]) -> None:
    images_dir = root / "detect" / "images"
    images_dir.mkdir(parents=True)
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    for split, n in counts.items():
        rng = _rng(seed, "detect", split)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        scenes = _scene_images(rng, n, size, (1, 4), (0.08 * size, 0.16 * size))
        for i, (img, placed) in enumerate(scenes):
            name = f"{split}_{i:04d}.png"
            _save(img, images_dir / name)
            image_id = i + 1
            images.append({"id": image_id, "file_name": f"images/{name}", "width": size, "height": size})
            for p in placed:
                x1, y1, x2, y2 = p.box
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id[p.shape],
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                    "attributes": {"colour": p.colour},
                })
        doc = {"info": {"description": f"vrft-lite synthetic shapes ({split})"}, "images": images,
               "annotations": annotations, "categories": categories}
        (root / "detect" / f"{split}.json").write_text(json.dumps(doc, indent=1) + "\n")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_ground(root: Path, seed: int, size: int, counts: dict[str, int]) -> None:
    images_dir = root / "ground" / "images"
    images_dir.mkdir(parents=True)
    for split, n in counts.items():
        rng = _rng(seed, "ground", split)
        rows = []
        scenes = _scene_images(rng, n, size, (2, 4), (0.1 * size, 0.18 * size), unique=True)
        for i, (img, placed) in enumerate(scenes):
            name = f"{split}_{i:04d}.png"
            _save(img, images_dir / name)
            target = placed[int(rng.integers(len(placed)))]
            rows.append({"image": f"images/{name}", "task": "ground", "query": f"the {target.colour} {target.shape}",
                         "solution": list(target.box)})
        _write_jsonl(root / "ground" / f"{split}.jsonl", rows)


def _write_count(root: Path, seed: int, size: int, counts: dict[str, int]) -> None:
    images_dir = root / "count" / "images"
    images_dir.mkdir(parents=True)
    for split, n in counts.items():
        rng = _rng(seed, "count", split)
        rows = []
        for i, (img, placed) in enumerate(_scene_images(rng, n, size, (1, 6), (0.07 * size, 0.12 * size))):
            name = f"{split}_{i:04d}.png"
            _save(img, images_dir / name)
            shape = _pick(rng, SHAPES)
            rows.append({"image": f"images/{name}", "task": "count",
                         "query": f"How many {PLURALS[shape]} are in the image?",
                         "solution": sum(p.shape == shape for p in placed)})
        _write_jsonl(root / "count" / f"{split}.jsonl", rows)


def _read_marker(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def make_shapes(
    root: str | Path,
    *,
    seed: int = 0,
    image_size: int = 112,
    train_per_class: int = 16,
    test_per_class: int = 8,
    force: bool = False,
) -> Path:
    """Write the synthetic shapes dataset to `root` (once) and return `root`.

    Sizes: classification has `train_per_class` / `test_per_class` images per shape; the
    detection, grounding and counting splits have as many images as classification has in all
    (per_class x 4 shapes). A complete dataset with the same parameters is reused unless `force`;
    one made with other parameters is replaced. A non-empty folder that is not a shapes
    dataset is never overwritten. Written to a temporary sibling and renamed into place, so a
    crash or a concurrent build never leaves a half-written dataset behind.

    >>> root = make_shapes(tmp_path / "shapes")                          # doctest: +SKIP
    >>> sorted(p.name for p in (root / "classify" / "train").iterdir())  # doctest: +SKIP
    ['circle', 'square', 'star', 'triangle']
    """
    if image_size < 56:
        raise ValueError(f"image_size must be at least 56 pixels, got {image_size}")
    if train_per_class < 1 or test_per_class < 1:
        raise ValueError("train_per_class and test_per_class must be at least 1")
    root = Path(root).expanduser()
    params = {"version": GENERATOR_VERSION, "seed": seed, "image_size": image_size,
              "train_per_class": train_per_class, "test_per_class": test_per_class}
    existing = _read_marker(root)
    if existing == params and not force:
        return root
    if root.exists() and existing is None and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not a shapes dataset (no {MARKER}); refusing to overwrite it")

    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        per_split = {"train": train_per_class, "test": test_per_class}
        scenes = {split: n * len(SHAPES) for split, n in per_split.items()}
        _write_classify(tmp, seed, image_size, per_split)
        _write_detect(tmp, seed, image_size, scenes)
        _write_ground(tmp, seed, image_size, scenes)
        _write_count(tmp, seed, image_size, scenes)
        (tmp / MARKER).write_text(json.dumps(params, indent=1) + "\n")
        _move_into_place(tmp, root, replace=existing is not None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _move_into_place(tmp: Path, root: Path, *, replace: bool) -> None:
    """rename(tmp, root); an empty `root` is replaced, a stale dataset swapped out then deleted."""
    if replace and root.exists():
        old = root.with_name(f".{root.name}.old-{os.getpid()}")
        os.rename(root, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, root)
    except OSError:
        # Another process finished first (root now non-empty): keep theirs if it is whole.
        if _read_marker(root) is None:
            raise
