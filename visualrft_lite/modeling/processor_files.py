"""A checkpoint's processor as its files describe it: what `config.resolve` needs to know of it
(image resize bounds, pixels per token, what the chat template's generation prompt writes),
and the files themselves, which `vrft-lite merge` copies into the merged folder byte for byte.

    read_processor      ModelSource -> CheckpointProcessor (the processor loads, no weights;
                        once per checkpoint and process)
    processor_folder    where the checkpoint's files are on disk (a directory, or its snapshot
                        in the Hugging Face cache)
    copy_processor      the processor files into a folder, optionally with other pixel limits
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from visualrft_lite.config.resolve import CheckpointProcessor
from visualrft_lite.modeling.hub import ModelSource

PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json",
                   "chat_template.json", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json",
                   "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json")
"""What a hub checkpoint ships for its processor (image and video processors, chat templates,
tokenizer); config.json, generation_config.json and the weights come from `save_pretrained`."""
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
"""The files that hold the image processor's resize bounds (transformers 5 may write only the second)."""

_READ: dict[tuple[Any, ...], CheckpointProcessor] = {}


def hub_kwargs(source: ModelSource) -> dict[str, Any]:
    """from_pretrained arguments that read a cached checkpoint without asking the hub."""
    if source.where == "cache":
        return dict(local_files_only=True, cache_dir=source.cache_dir)
    if source.where == "hub":
        return dict(cache_dir=source.cache_dir)
    return {}


def image_bounds(processor: Any) -> tuple[int | None, int | None]:
    """The image processor's (min_pixels, max_pixels): its size dict, else its own attributes."""
    ip = processor.image_processor
    size = getattr(ip, "size", None) or {}
    get = size.get if hasattr(size, "get") else lambda k, d=None: getattr(size, k, d)
    low, high = get("shortest_edge", None), get("longest_edge", None)
    low = low if low is not None else getattr(ip, "min_pixels", None)
    high = high if high is not None else getattr(ip, "max_pixels", None)
    return (int(low) if low else None), (int(high) if high else None)


def describe(processor: Any) -> CheckpointProcessor:
    """A loaded processor's resize bounds, pixels per token side and thinking tails."""
    from visualrft_lite.modeling import ops

    ip = processor.image_processor
    low, high = image_bounds(processor)
    patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
    return CheckpointProcessor(min_pixels=low, max_pixels=high, factor=patch * merge if patch and merge else None,
                               tails=ops.thinking_tails(processor))


def read_processor(source: ModelSource) -> CheckpointProcessor | None:
    """The checkpoint's processor, described; None when it cannot be loaded (the load says why)."""
    key: tuple[Any, ...] = (source.name, source.where, source.cache_dir)
    if source.where == "local":
        key += tuple(_mtime(Path(source.name) / n) for n in PROCESSOR_FILES)
    if key not in _READ:
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(source.name, **hub_kwargs(source))
        except (OSError, ValueError):
            return None
        _READ[key] = describe(processor)
    return _READ[key]


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def processor_folder(source: ModelSource) -> Path | None:
    """The folder holding the checkpoint's files: the directory itself, or its cache snapshot."""
    if source.where == "local":
        return Path(source.name)
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(source.name, "config.json", cache_dir=source.cache_dir)
    return Path(found).parent if isinstance(found, str) else None


def copy_processor(folder: Path, out: Path, limits: tuple[int, int] | None = None) -> list[str]:
    """Copy the processor files of `folder` into `out` as they are, or with the image resize
    bounds set to `limits` (min_pixels, max_pixels); returns the names written."""
    written = []
    for name in PROCESSOR_FILES:
        src = folder / name
        if not src.is_file():
            continue
        shutil.copyfile(src, out / name)  # the bytes, not a re-serialisation
        if limits is not None and name in IMAGE_PROCESSOR_FILES:
            _set_limits(out / name, limits)
        written.append(name)
    return written


def _set_limits(path: Path, limits: tuple[int, int]) -> None:
    """The image processor's bounds in one of its JSON files (top level, or its image_processor section)."""
    data = json.loads(path.read_text())
    if isinstance(data.get("image_processor"), dict):
        section = data["image_processor"]
    elif path.name == "preprocessor_config.json":
        section = data
    else:
        return  # a processor_config.json without an image processor section
    low, high = limits
    if "size" in section or not ({"min_pixels", "max_pixels"} & set(section)):
        section["size"] = {**(section.get("size") or {}), "shortest_edge": low, "longest_edge": high}
    for key, value in (("min_pixels", low), ("max_pixels", high)):
        if key in section:
            section[key] = value
    path.write_text(json.dumps(data, indent=2) + "\n")
