"""One entry point from a `data:` config section to records: `load_records(cfg, split)`.

    hub        Visual-RFT parquet / save_to_disk / hub id           (data/hub.py)
    folder     root/<class>/*.jpg, k-shot per class                 (data/folder.py)
    coco       COCO / LVIS instance JSON, k-shot per category       (data/coco.py)
    jsonl      your own records                                      (data/jsonl.py)
    synthetic  generated shapes, cached, then one of the above by task

Every image is probed once here (size + cheap integrity check); missing or corrupt ones are
skipped and counted in `LoadResult.skipped`, as are clipped and dropped boxes. The trainer
decodes images per step with `images.load_image`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from visualrft_lite.data.coco import load_coco
from visualrft_lite.data.common import LoadResult, apply_limit, require_path
from visualrft_lite.data.folder import load_folder
from visualrft_lite.data.hub import load_hub
from visualrft_lite.data.jsonl import load_jsonl
from visualrft_lite.data.synthetic import make_shapes
from visualrft_lite.errors import UserError
from visualrft_lite.prompts import render_prompt

if TYPE_CHECKING:
    from visualrft_lite.config import DataConfig

__all__ = ["LoadResult", "load_records", "synthetic_root"]

_WHAT = {
    "folder": "a folder of class sub-folders",
    "coco": "a COCO/LVIS instances .json file",
    "jsonl": "a .jsonl file of records",
}


def synthetic_root(cfg: DataConfig) -> Path:
    """Where the shapes data for this seed lives: data.path, else $VRFT_LITE_HOME/data, else ~/.cache."""
    if cfg.path:
        return Path(cfg.path).expanduser()
    home = os.environ.get("VRFT_LITE_HOME")
    base = Path(home).expanduser() if home else Path("~/.cache/vrft-lite").expanduser()
    return base / "data" / f"shapes-{cfg.seed}"


def ensure_synthetic(root: Path, seed: int) -> Path:
    """Generate the shapes dataset once (make_shapes reuses a complete one and writes atomically)."""
    try:
        return make_shapes(root, seed=seed)
    except FileExistsError:
        raise UserError(f"{root} exists and is not a synthetic shapes dataset; point data.path elsewhere or leave it empty") from None


def _load_synthetic(cfg: DataConfig, split: Literal["train", "eval"]) -> LoadResult:
    root = ensure_synthetic(synthetic_root(cfg), cfg.seed)
    name = "train" if split == "train" else "test"
    if cfg.task == "classify":
        return load_folder(root / "classify", cfg, split)
    if cfg.task == "detect":
        sub = dataclasses.replace(cfg, image_root=str(root / "detect"))
        return load_coco(root / "detect" / f"{name}.json", sub, split)
    if cfg.task in ("ground", "count"):
        sub = dataclasses.replace(cfg, image_root=None)
        return load_jsonl(root / cfg.task / f"{name}.jsonl", sub)
    raise UserError(f"the synthetic data has no {cfg.task} task; use data.task classify, detect, ground or count")


def load_records(cfg: DataConfig, split: Literal["train", "eval"] = "train") -> LoadResult:
    """Records of the train split, or of the held-out split (data.eval_path, else the source's test split).

    Train-only sampling (shots, negatives) is not applied to the eval split; `limit` keeps a
    seeded subset of at most that many records. A `data.prompt` template is rendered into
    each record's prompt here, so training, SFT and evaluation all ask the same question.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if cfg.source == "synthetic":
        result = _load_synthetic(cfg, split)
    else:
        explicit_eval = split == "eval" and cfg.eval_path is not None
        key = "data.eval_path" if explicit_eval else "data.path"
        raw = cfg.eval_path if explicit_eval else cfg.path
        if cfg.source == "hub":
            if not raw:
                raise UserError(f"{key} is empty; set it to a parquet file or folder, a save_to_disk folder or a hub id")
            result = load_hub(raw, cfg, split, key)
        else:
            path = require_path(raw, key, _WHAT[cfg.source])
            if cfg.source == "folder":
                result = load_folder(path, cfg, split, key)
            elif cfg.source == "coco":
                if split == "eval" and not explicit_eval:
                    raise UserError("COCO json has no built-in test split; set data.eval_path to the val instances json")
                result = load_coco(path, cfg, split, key)
            else:
                if split == "eval" and not explicit_eval:
                    raise UserError("a jsonl dataset has no built-in test split; set data.eval_path")
                result = load_jsonl(path, cfg, key)
    result.records = apply_limit(result.records, cfg.limit, cfg.seed)
    if cfg.prompt is not None:
        for rec in result.records:
            rec.prompt = render_prompt(rec, cfg.prompt)
    return result
