"""Shared fixtures: the tiny local Qwen2-VL and the synthetic shapes, built once per session.

The whole session runs with $VRFT_LITE_HOME in a temporary folder, so no test writes to the
user's ~/.cache, and the tiny model and shapes are built exactly where the code's defaults
look for them: the alias `vrft-lite/tiny-qwen2-vl` and `data.source: synthetic` without a
path resolve to these same folders instead of building a second copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# No machine here reaches a model hub; fail at once instead of waiting on network timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def vrft_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private $VRFT_LITE_HOME for the session (models/ and data/ are built under it)."""
    home = tmp_path_factory.mktemp("vrft-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VRFT_LITE_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def tiny_model_dir(vrft_home: Path) -> Path:
    """The tiny random-weight Qwen2-VL (seed 0), saved like a hub checkpoint."""
    from visualrft_lite.modeling.tiny import ensure_tiny_model

    return ensure_tiny_model(vrft_home / "models", seed=0)


@pytest.fixture(scope="session")
def shapes_root(vrft_home: Path) -> Path:
    """The synthetic shapes dataset at its default sizes (seed 0), where `synthetic` looks by default."""
    from visualrft_lite.data.synthetic import make_shapes

    root = make_shapes(vrft_home / "data" / "shapes-0", seed=0)
    # sources.ensure_synthetic marks a finished dataset with .complete; mark this one too
    # so loaders reuse it instead of regenerating it into a temporary folder on every load.
    (root / ".complete").write_text("ok\n")
    return root
