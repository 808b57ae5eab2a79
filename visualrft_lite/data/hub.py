"""Visual-RFT's released data: columns image / problem / solution.

Accepted at `data.path`: a parquet file, a directory of parquet files (split by file or folder
name: train-*.parquet, test/..., as the hub lays them out), a `save_to_disk` directory (a
Dataset or a DatasetDict; its Arrow files are read with pyarrow directly), a hub cache folder
(`datasets--owner--name/`, whose `snapshots/<rev>/` hold the files), or a hub id such as
`laolao77/ViRFT_COCO_8_cate_4_shot` (through `datasets.load_dataset`, the `hub` extra).
`is_hub_dir` recognises such a folder from its contents, whatever data.source says.
Visual-RFT's sets are train-only: evaluating on one says which setting names held-out data.

`problem` becomes the record's prompt verbatim; `solution` ("<answer>...</answer>", boxes in
0-1000) is parsed by `answers.parse_solution` into pixels of the image it belongs to. Images
stay encoded bytes in the record (decoded per step by `load_image`).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from visualrft_lite.answers import answer_or_text
from visualrft_lite.data.common import (
    BAD_SOLUTION,
    MISSING_IMAGE,
    SHORT_CLASS,
    ImageChecker,
    LoadResult,
    clip_boxes,
    match_names,
    norm_name,
    seeded_order,
)
from visualrft_lite.data.jsonl import record_solution
from visualrft_lite.data.records import Record
from visualrft_lite.errors import UserError

if TYPE_CHECKING:
    from visualrft_lite.config import DataConfig

COLUMNS = ("image", "problem", "solution")
TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("test", "validation", "val")
INSTALL_HINT = "pip install 'vrft-lite[hub]'"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CATEGORY = re.compile(r"category '([^']+)'")
_INSTRUCTION = re.compile(r"instruction:\s*(.*?)\s*Output the thinking", re.DOTALL)

Row = dict[str, Any]


NO_TEST_SPLIT = ("Visual-RFT's released sets are train-only; evaluate on held-out data with --set data.eval_path=PATH "
                 "(e.g. the official dataset's folder, or a COCO val json) or eval --data SOURCE:PATH")


def snapshot_dir(path: Path) -> Path:
    """A hub cache folder (datasets--owner--name/) -> its current snapshots/<rev>/; else `path`."""
    snapshots = path / "snapshots"
    if not snapshots.is_dir():
        return path
    ref = path / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    revs = sorted((d for d in snapshots.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    if not revs:
        raise UserError(f"{path} is a hub cache folder with no downloaded snapshot; download the dataset again")
    return revs[-1]


def is_hub_dir(path: Path) -> bool:
    """A hub layout: parquet files in the folder or in its data/, train/, test/ ... sub-folders
    (what `--local-dir` downloads leave), a save_to_disk folder, or a hub cache folder."""
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file() or (path / "snapshots").is_dir():
        return True
    return any(any(folder.glob("*.parquet")) for folder in (path, *(path / s for s in ("data", *TRAIN_SPLITS, *EVAL_SPLITS))))


def _pyarrow() -> Any:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UserError(f"reading parquet/arrow data needs pyarrow: {INSTALL_HINT}") from None
    return pyarrow


def _split_of(path: Path, base: Path) -> str | None:
    """'train' / 'eval' from a file's name or folders (train-00000-of-00001.parquet, test/x.parquet)."""
    parts = [p.lower() for p in path.relative_to(base).parent.parts] + [path.stem.lower().split("-")[0]]
    if any(p in TRAIN_SPLITS for p in parts):
        return "train"
    if any(p in EVAL_SPLITS for p in parts):
        return "eval"
    return None


def _pick_split(names: list[str], split: Literal["train", "eval"], where: str, key: str) -> str | None:
    wanted = TRAIN_SPLITS if split == "train" else EVAL_SPLITS
    for name in wanted:
        if name in names:
            return name
    if split == "eval" and key == "data.path":
        raise UserError(f"{where} has no test split (splits: {', '.join(names) or 'none'}); {NO_TEST_SPLIT}")
    return None


def _read_parquet(files: list[Path], base: Path) -> Iterator[tuple[Row, str]]:
    pa = _pyarrow()
    for f in files:
        try:
            pf = pa.parquet.ParquetFile(f)
        except Exception as e:  # ArrowInvalid etc.
            raise UserError(f"cannot read parquet file {f}: {' '.join(str(e).split())[:200]}") from None
        _check_columns(pf.schema_arrow.names, f)
        for batch in pf.iter_batches(batch_size=64, columns=list(COLUMNS)):
            for row in batch.to_pylist():
                yield row, str(f.relative_to(base)) if f != base else f.name


def _read_arrow_dataset(folder: Path) -> Iterator[tuple[Row, str]]:
    """A `Dataset.save_to_disk` folder: state.json lists Arrow IPC stream files."""
    pa = _pyarrow()
    state = json.loads((folder / "state.json").read_text())
    files = [folder / d["filename"] for d in state.get("_data_files", [])] or sorted(folder.glob("*.arrow"))
    for f in files:
        source = pa.memory_map(str(f))  # zero-copy: stays open while its batches are read
        try:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                reader = pa.ipc.open_file(source)
            _check_columns(reader.schema.names, f)
            table = reader.read_all().select(list(COLUMNS))
            for batch in table.to_batches(max_chunksize=64):
                for row in batch.to_pylist():
                    yield row, f.name
        finally:
            source.close()


def _check_columns(names: list[str], where: Path | str) -> None:
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise UserError(f"{where} lacks column {missing[0]!r}: Visual-RFT data has columns image, problem, solution (found: {', '.join(names)})")


def _local_rows(path: Path, split: Literal["train", "eval"], key: str) -> tuple[Iterator[tuple[Row, str]], Path]:
    """Rows of a local parquet file / folder / save_to_disk folder, and the folder paths are relative to."""
    if path.is_file():
        if split == "eval" and key == "data.path":
            raise UserError(f"{path} is a single file with no test split; {NO_TEST_SPLIT}")
        if path.suffix == ".arrow":
            raise UserError(f"{path}: point {key} at the save_to_disk folder, not one of its .arrow files")
        return _read_parquet([path], path), path.parent
    if (path / "dataset_dict.json").is_file():  # DatasetDict.save_to_disk
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        name = _pick_split(splits, split, str(path), key) or (splits[0] if splits else None)
        if name is None or not (path / name / "state.json").is_file():
            raise UserError(f"{path}: save_to_disk folder without a usable split (splits: {', '.join(splits) or 'none'})")
        return _read_arrow_dataset(path / name), path / name
    if (path / "state.json").is_file():  # Dataset.save_to_disk
        if split == "eval" and key == "data.path":
            raise UserError(f"{path} is one dataset with no test split; {NO_TEST_SPLIT}")
        return _read_arrow_dataset(path), path
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise UserError(f"{path} holds no parquet files and is not a save_to_disk folder ({key})")
    tagged = defaultdict(list)
    for f in files:
        tagged[_split_of(f, path)].append(f)
    if split == "train":
        chosen = tagged["train"] or tagged[None] or ([] if tagged["eval"] else files)
    else:
        chosen = tagged["eval"] or (tagged[None] if key == "data.eval_path" else [])
    if not chosen:
        which = "train" if split == "train" else "test"
        if split == "eval" and key == "data.path":
            raise UserError(f"{path} has no test-*.parquet files; {NO_TEST_SPLIT}")
        raise UserError(f"{path} has no {which} parquet files ({key})")
    return _read_parquet(chosen, path), path


def _hub_rows(repo: str, split: Literal["train", "eval"], key: str) -> tuple[Iterator[tuple[Row, str]], Path | None]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"{key}={repo} looks like a hub id, and loading from the hub needs the datasets package: {INSTALL_HINT} (or point {key} at a local parquet/save_to_disk path)") from None
    try:
        dd = datasets.load_dataset(repo)
    except Exception as e:
        raise UserError(f"cannot load dataset {repo!r} from the hub ({' '.join(str(e).split())[:200]}); check {key}") from None
    name = _pick_split(list(dd), split, repo, key) or list(dd)[0]
    ds = dd[name]
    _check_columns(list(ds.column_names), repo)
    if isinstance(ds.features.get("image"), datasets.Image):
        ds = ds.cast_column("image", datasets.Image(decode=False))  # keep bytes; decode per step
    return ((row, f"{repo}:{name}") for row in ds), None


def _image_of(value: Any, base: Path | None, cfg: DataConfig) -> bytes | str | None:
    """The image cell as bytes, or a path string for path-only cells."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value:
        p = Path(value).expanduser()
        if not p.is_absolute():
            p = (Path(cfg.image_root).expanduser() if cfg.image_root else (base or Path.cwd())) / p
        return str(p)
    return None


def _fields(task: str, problem: str, cfg: DataConfig) -> dict[str, Any]:
    """Prompt fields recovered from the verbatim problem (for presence prompts and templates)."""
    fields: dict[str, Any] = {}
    if task == "classify":
        fields.update(kind=cfg.kind, attribute=cfg.attribute)
    elif task == "detect" and (m := _CATEGORY.search(problem)):
        fields["category"] = m.group(1)
    elif task == "ground" and (m := _INSTRUCTION.search(problem)):
        fields["query"] = m.group(1)
    return fields


def _group(rec: Record) -> str | None:
    if rec.task == "classify":
        return str(rec.solution["label"])
    return rec.fields.get("category")


def load_hub(path_str: str, cfg: DataConfig, split: Literal["train", "eval"], key: str = "data.path") -> LoadResult:
    path = Path(path_str).expanduser()
    if path.exists():
        rows, base = _local_rows(snapshot_dir(path) if path.is_dir() else path, split, key)
    elif _HUB_ID.match(path_str) and not path_str.endswith((".parquet", ".arrow", ".json")):
        rows, base = _hub_rows(path_str, split, key)
    else:
        raise UserError(f"dataset path {path_str} not found ({key}); give a parquet file or folder, a save_to_disk folder or a hub id")

    skipped: Counter[str] = Counter()
    checker = ImageChecker(skipped, "data.image_root")
    records: list[Record] = []
    for index, (row, origin) in enumerate(rows):
        where = f"{origin}:row {index}"
        image = _image_of(row.get("image"), base, cfg)
        if image is None:
            checker.skip(MISSING_IMAGE, where, "the image cell is empty")
            continue
        size = checker.size(image, key=image if isinstance(image, str) else None, name=where)
        if size is None:
            continue
        problem, solution = row.get("problem"), row.get("solution")
        if not isinstance(problem, str) or not isinstance(solution, str):
            checker.skip(BAD_SOLUTION, where, "problem / solution is not text")
            continue
        try:
            truth = record_solution(cfg.task, solution, size, cfg, skipped)
        except ValueError as e:
            checker.skip(BAD_SOLUTION, where, " ".join(str(e).split())[:200])
            continue
        if truth is None:  # the only box lay outside the image (counted)
            continue
        records.append(
            Record(
                image=image,
                task=cfg.task,
                solution=truth,
                fields=_fields(cfg.task, problem, cfg),
                prompt=problem,
                image_size=size,
                meta={"source": "hub", "origin": origin, "row": index, "answer": answer_or_text(solution)},
            )
        )

    setting, wanted = cfg.categories_for(split)
    if wanted:
        available = sorted({g for r in records if (g := _group(r)) is not None})
        keep = {norm_name(n) for n in match_names(wanted, available, setting, path_str)}
        records = [r for r in records if norm_name(_group(r) or "") in keep]
    if cfg.shots is not None and split == "train" and cfg.task in ("classify", "detect"):
        records = _k_per_group(records, cfg.shots, cfg.seed, skipped)
    return LoadResult(records, skipped, checker.entries)


def _k_per_group(records: list[Record], k: int, seed: int, skipped: Counter[str]) -> list[Record]:
    """k records per label/category (detection: k images with boxes; negatives kept as given)."""
    groups: dict[str | None, list[int]] = defaultdict(list)
    keep: set[int] = set()
    for i, r in enumerate(records):
        if r.task == "detect" and not r.solution:
            keep.add(i)
        else:
            groups[_group(r)].append(i)
    for name, members in groups.items():
        picked = seeded_order(members, seed, str(name))[:k]
        if len(picked) < k:
            skipped[SHORT_CLASS] += 1
        keep.update(picked)
    return [r for i, r in enumerate(records) if i in keep]
