"""One entry point from a `data:` config section to records: `load_records(cfg, split)`, and
`SOURCES`, the registry of every data.source (what `eval --data SOURCE:PATH` takes too):

    hub            Visual-RFT parquet / save_to_disk / hub cache / hub id      (data/hub.py)
    folder         root/<class>/*.jpg or root/{train,test|val|valid}/<class>/  (data/folder.py)
    flowers102, oxford_pets, fgvc_aircraft, stanford_cars
                   the official releases, downloadable                         (data/official.py)
    coco           COCO / LVIS instance JSON or a COCO folder                  (data/coco.py)
    reasonseg      LISA's per-image JSON, or Visual-RFT's lisa_train.json      (data/reasonseg.py)
    jsonl          your own records (JSON Lines or a JSON array)               (data/jsonl.py)
    synthetic      generated shapes, cached, then one of the above by task

What a path holds decides how it is read when its contents are unambiguous (`detect_kind`):
a parquet folder is hub data, an official layout is that dataset, a JSON array of
lisa_train.json items is LISA, whatever data.source says; data.source decides the rest and
which dataset to download. Every image is probed once here (size + cheap integrity check);
missing or corrupt ones are skipped, counted in `LoadResult.skipped` and named in
`LoadResult.files`, as are clipped and dropped boxes (counted only). The trainer decodes
images per step with `images.load_image`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from visualrft_lite.data.coco import coco_json, load_coco
from visualrft_lite.data.common import LoadResult, apply_limit, require_path
from visualrft_lite.data.folder import load_folder
from visualrft_lite.data.hub import is_hub_dir, load_hub
from visualrft_lite.data.jsonl import load_jsonl
from visualrft_lite.data.official import OFFICIAL, download, find_official, is_repack, load_official, not_found
from visualrft_lite.data.reasonseg import is_lisa_item, is_reasonseg_dir, load_lisa_array, load_reasonseg
from visualrft_lite.data.synthetic import make_shapes
from visualrft_lite.errors import UserError
from visualrft_lite.prompts import render_prompt
from visualrft_lite.registry import Registry

if TYPE_CHECKING:
    from visualrft_lite.config import DataConfig

__all__ = ["SOURCES", "DataSource", "LoadResult", "detect_kind", "load_records", "synthetic_root"]

Split = Literal["train", "eval"]


@dataclass(frozen=True)
class DataSource:
    """One way of reading records: load(path, cfg, split, key) -> LoadResult."""

    load: Callable[[Path, DataConfig, Split, str], LoadResult]
    what: str
    """What data.path holds, for messages ("a .jsonl file of records")."""
    suffixes: tuple[str, ...] = ()
    """`eval --data PATH` with this suffix is this source."""
    needs_path: bool = True


SOURCES: Registry[DataSource] = Registry("data source", "data.source")


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
    except OSError as e:  # an unwritable or full cache home
        from visualrft_lite.errors import cache_home_error

        raise cache_home_error(root, e) from None


def _load_synthetic(cfg: DataConfig, split: Split) -> LoadResult:
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


def _json_kind(path: Path) -> str | None:
    """'coco' for a JSON object, 'lisa' for an array of lisa_train.json items, 'jsonl' for other arrays."""
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"{"):
        return "coco"
    if head.startswith(b"["):
        try:
            rows = json.loads(path.read_bytes())
        except ValueError:
            return "jsonl"  # the jsonl reader names the broken spot
        return "lisa" if rows and is_lisa_item(rows[0]) else "jsonl"
    return None


def detect_kind(path: Path, declared: str) -> str:
    """How to read an existing `path`: by its contents when they are unambiguous, else `declared`.

    Returns a registered source name (a lisa_train.json array is `reasonseg`).
    """
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".arrow"):
            return "hub"
        if suffix == ".jsonl":
            return "jsonl"
        if suffix == ".json":
            kind = _json_kind(path) or declared
            return "reasonseg" if kind == "lisa" else kind
        return declared
    if not path.is_dir():
        return declared
    found = find_official(path, prefer=declared)
    if found is not None:
        return found[0].source
    if is_hub_dir(path):
        return "hub"
    if any(path.glob("instances_*.json")) or any(path.glob("annotations/instances_*.json")) or any(path.glob("lvis_v*_*.json")):
        return "coco"
    if declared in ("reasonseg", "jsonl") and is_reasonseg_dir(path):
        return "reasonseg"
    return declared


def _load_path(raw: str, cfg: DataConfig, split: Split, key: str) -> LoadResult:
    """Records from one configured path (data.path, or data.eval_path for the eval split)."""
    if cfg.source == "hub" and not Path(raw).expanduser().exists():
        return load_hub(raw, cfg, split, key)  # a hub id
    if cfg.source in OFFICIAL and not Path(raw).expanduser().exists():
        dataset = OFFICIAL[cfg.source]
        if not cfg.download or key != "data.path":
            raise not_found(dataset, Path(raw).expanduser(), key)
        download(dataset, Path(raw).expanduser())
    path = require_path(raw, key, SOURCES.get(cfg.source).what)
    return SOURCES.get(detect_kind(path, cfg.source)).load(path, cfg, split, key)


def _official(path: Path, cfg: DataConfig, split: Split, key: str) -> LoadResult:
    kind = detect_kind(path, cfg.source)
    found = find_official(path, prefer=cfg.source)
    if found is None and path.is_dir() and is_repack(path, cfg):
        return load_folder(path, cfg, split, key)  # a class-folder re-pack (train/, valid/, cat_to_name.json)
    if found is None and cfg.download and key == "data.path":
        found = find_official(download(OFFICIAL[kind], path), prefer=kind)
    if found is None:
        raise not_found(OFFICIAL[kind], path, key)
    dataset, base = found
    if cfg.source in OFFICIAL and cfg.source != dataset.source:
        raise UserError(f"{path} holds {dataset.title}, but data.source is {cfg.source}; set "
                        f"data.source={dataset.source} (or use its preset)")
    return load_official(dataset, base, cfg, split, key)


def _reasonseg(path: Path, cfg: DataConfig, split: Split, key: str) -> LoadResult:
    if path.is_file():
        if _json_kind(path) != "lisa":
            raise UserError(f"{path}: ReasonSeg is a folder (train/, val/, test/ of <id>.jpg + <id>.json), "
                            f"or Visual-RFT's lisa_train.json array ({key})")
        if split == "eval" and key == "data.path":
            raise UserError(f"{path} (Visual-RFT's lisa_train.json) has no test split; set data.eval_path to ReasonSeg's "
                            f"folder (its test/ is used)")
        return load_lisa_array(path, json.loads(path.read_bytes()), cfg, key)
    return load_reasonseg(path, cfg, split, key)


def _jsonl(path: Path, cfg: DataConfig, split: Split, key: str) -> LoadResult:
    if split == "eval" and key == "data.path":
        raise UserError("a jsonl dataset has no built-in test split; set data.eval_path")
    return load_jsonl(path, cfg, key)


SOURCES.add("hub", DataSource(lambda path, cfg, split, key: load_hub(str(path), cfg, split, key),
                              "a parquet file or folder, a save_to_disk folder or a hub id", (".parquet", ".arrow")),
            help="Visual-RFT's released parquet sets (image / problem / solution), local or a hub id")
SOURCES.add("folder", DataSource(load_folder, "a folder of class sub-folders"),
            help="class-per-folder images; train/ + test/, val/ or valid/; cat_to_name.json for numbered folders")
SOURCES.add("coco", DataSource(lambda path, cfg, split, key: load_coco(coco_json(path, split, key), cfg, split, key),
                               "a COCO/LVIS instances .json file or a COCO folder", (".json",)),
            help="COCO / LVIS instance JSON or the COCO folder, categories by name, k-shot + negatives")
SOURCES.add("jsonl", DataSource(_jsonl, "a .jsonl file of records", (".jsonl",)),
            help='your own records: {"image", "task", "solution", "query"...} (JSON Lines or a JSON array)')
SOURCES.add("synthetic", DataSource(lambda path, cfg, split, key: _load_synthetic(cfg, split),
                                    "a folder for the generated shapes", needs_path=False),
            help="generated coloured shapes (the demo and the tests)")
for _dataset in OFFICIAL.values():
    SOURCES.add(_dataset.source, DataSource(_official, f"the folder {_dataset.folder}/ of the official download, "
                                                       f"or its parent"),
                help=f"{_dataset.title} as released, its own class names and splits (data.download: true fetches it)")
SOURCES.add("reasonseg", DataSource(_reasonseg, "ReasonSeg's folder (train/, val/, test/) or Visual-RFT's lisa_train.json"),
            help="LISA's ReasonSeg as released (labelme JSON per image), or Visual-RFT's lisa_train.json")


def load_records(cfg: DataConfig, split: Literal["train", "eval"] = "train") -> LoadResult:
    """Records of the train split, or of the held-out split (data.eval_path, else the source's test split).

    Train-only sampling (shots, negatives) is not applied to the eval split; `limit` keeps a
    seeded subset of at most that many records. A `data.prompt` template is rendered into
    each record's prompt here, so training, SFT and evaluation all ask the same question.
    Every skipped file's entry gets `stage` = split.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    source = SOURCES.get(cfg.source)
    if not source.needs_path:
        result = source.load(Path(cfg.path), cfg, split, "data.path")
    else:
        explicit_eval = split == "eval" and cfg.eval_path is not None
        key = "data.eval_path" if explicit_eval else "data.path"
        raw = cfg.eval_path if explicit_eval else cfg.path
        if not raw:
            raise UserError(f"{key} is empty; set it to {source.what} (--set {key}=...)")
        result = _load_path(raw, cfg, split, key)
    for entry in result.files:
        entry.stage = entry.stage or split
    result.records = apply_limit(result.records, cfg.limit, cfg.seed)
    if cfg.prompt is not None:
        for rec in result.records:
            rec.prompt = render_prompt(rec, cfg.prompt)
    return result
