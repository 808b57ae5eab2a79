"""How many image tokens an image costs: the Qwen processors' resize rule, without the processor.

The Qwen VL image processors resize every image to a multiple of `factor` pixels a side
(patch size x spatial merge: 28 for Qwen2/2.5-VL, 32 for Qwen3-VL and Qwen3.5) whose area lies
in [min_pixels, max_pixels], keeping the aspect ratio as closely as they can; each factor x
factor square is one image token. `data show`, the start-up lines of train / eval / predict
and `predict --json` use this to show the token budget before any model is loaded.
tests/test_hub_models.py checks it against the real processors. Pure: stdlib only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

MAX_ASPECT = 200
"""The processors refuse images whose long side is more than 200 times the short one."""


def resized_size(width: int, height: int, *, min_pixels: int, max_pixels: int, factor: int) -> tuple[int, int]:
    """(width, height) the processor resizes an image to; ValueError for an aspect ratio it refuses.

    Each side is rounded to the nearest multiple of `factor`; when that area leaves the
    bounds, both sides are scaled by the same sqrt(area ratio) and rounded towards the bound
    (down below max_pixels, at least one factor; up above min_pixels).

    >>> resized_size(112, 112, min_pixels=3136, max_pixels=401408, factor=28)  # already inside
    (112, 112)
    >>> resized_size(112, 112, min_pixels=65536, max_pixels=16777216, factor=32)  # 128^2 < 256^2: up to 256
    (256, 256)
    >>> resized_size(1000, 600, min_pixels=3136, max_pixels=401408, factor=28)  # 1008x588 > 401408: down
    (812, 476)
    """
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ValueError(f"aspect ratio {max(width, height) / min(width, height):.0f} is above {MAX_ASPECT}")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return w, h


@dataclass(frozen=True)
class TokenBudget:
    """A run's image resize bounds and the pixels per token side of its model."""

    min_pixels: int
    max_pixels: int
    factor: int

    def tokens(self, width: int, height: int) -> int:
        """Image tokens of one width x height image (ValueError for one the processor refuses)."""
        w, h = resized_size(width, height, min_pixels=self.min_pixels, max_pixels=self.max_pixels, factor=self.factor)
        return (w // self.factor) * (h // self.factor)

    def bounds(self) -> str:
        """e.g. "3136-401408 pixels, 4-512 image tokens (28x28 pixels each)"."""
        square = self.factor * self.factor
        return (f"{self.min_pixels}-{self.max_pixels} pixels, {max(1, math.ceil(self.min_pixels / square))}-"
                f"{self.max_pixels // square} image tokens ({self.factor}x{self.factor} pixels each)")

    def describe(self, sizes: Iterable[tuple[int, int]]) -> str:
        """One line: image tokens per image over `sizes` (width, height), then the bounds."""
        counts, refused = [], 0
        for w, h in sizes:
            try:
                counts.append(self.tokens(w, h))
            except ValueError:
                refused += 1
        if not counts:
            return f"image tokens per image: {self.bounds()}" + (f"; {refused} images refused" if refused else "")
        n = len(counts) + refused
        spread = (f"{counts[0]}" if min(counts) == max(counts) else
                  f"{min(counts)} to {max(counts)} (median {statistics.median(counts):g})")
        more = f", {refused} refused (aspect ratio above {MAX_ASPECT})" if refused else ""
        return f"image tokens per image: {spread} over {n} image{'s' if n != 1 else ''}{more}; bounds {self.bounds()}"
