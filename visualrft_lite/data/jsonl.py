"""Your own records, one JSON object per line:

    {"image": "imgs/1.jpg", "task": "detect", "category": "dog", "solution": [[10, 20, 110, 90]]}
    {"image": "imgs/2.jpg", "task": "ground", "query": "the red cup", "solution": [5, 5, 60, 80]}
    {"image": "imgs/3.jpg", "task": "classify", "solution": "tabby cat", "labels": ["tabby cat", "lynx"]}

`image` is relative to data.image_root, else to the jsonl file's directory. `task` defaults to
data.task. Solutions are in pixels (lists) or Visual-RFT's strings ("<answer>...</answer>",
0-1000 boxes), read by `answers.parse_solution`. Optional prompt fields: query, category,
labels, options, kind, attribute, think (SFT reasoning); `prompt` is used verbatim.
A malformed line is a UserError naming file:line; a missing or corrupt image is skipped.
A JSON array of the same objects (a .json file) is read the same way, item numbers for lines.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visualrft_lite.data.common import ImageChecker, LoadResult, clip_boxes
from visualrft_lite.data.records import Record
from visualrft_lite.errors import UserError
from visualrft_lite.tasks import TASKS, get_task

if TYPE_CHECKING:
    from visualrft_lite.config import DataConfig

FIELD_KEYS = ("query", "instruction", "category", "labels", "options", "kind", "attribute", "think")
ROW_KEYS = ("image", "task", "solution", "prompt", "meta")


def known_keys() -> set[str]:
    """The keys a row may carry: its own, the shared prompt fields and every registered task's fields."""
    return {*ROW_KEYS, *FIELD_KEYS, *(f.name for e in TASKS.entries() for f in e.value.fields)}


def record_solution(task: str, solution: Any, size: tuple[int, int], cfg: DataConfig, skipped: Counter[str]) -> Any:
    """Truth in the form the task keeps in a Record (`Task.record_solution`); boxes clipped to the
    image (counted). ValueError if unreadable; None when no box is left."""
    return get_task(task).record_solution(solution, image_size=size, synonyms=cfg.synonyms,
                                          clip=lambda boxes: clip_boxes(boxes, size, skipped))


def prompt_fields(task: str, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
    """The row's prompt fields, with the task's data.* defaults (classification's kind, attribute)."""
    own = get_task(task).fields
    fields = {k: row[k] for k in (*FIELD_KEYS, *(f.name for f in own)) if k in row}
    for f in own:
        if f.data_default is not None:
            fields.setdefault(f.name, getattr(cfg, f.data_default))
    return fields


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed row) of a .jsonl file, or (item number, row) of a JSON array file."""
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith("["):  # a JSON array of records (e.g. a .json file), not JSON Lines
            try:
                rows = json.load(f)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            yield from enumerate(rows, 1)
            return
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None


def load_jsonl(path: Path, cfg: DataConfig, key: str = "data.path") -> LoadResult:
    """Records from JSON Lines, or from a JSON array of the same objects."""
    if path.is_dir():
        raise UserError(f"{key} must be a .jsonl file, got the directory {path}")
    root = Path(cfg.image_root).expanduser() if cfg.image_root else path.parent
    skipped: Counter[str] = Counter()
    checker = ImageChecker(skipped, "data.image_root")
    records: list[Record] = []
    for lineno, row in _json_rows(path):
        where = f"{path}:{lineno}"
        if not isinstance(row, dict):
            raise UserError(f"{where}: each line must be a JSON object with image, task and solution")
        for required in ("image", "solution"):
            if required not in row:
                raise UserError(f"{where}: missing {required!r} (each line needs image and solution)")
        known = known_keys()
        unknown = sorted(set(row) - known)
        if unknown:
            raise UserError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        task = row.get("task", cfg.task)
        if task not in TASKS:
            raise UserError(f"{where}: unknown task {task!r}; choose one of {TASKS.choices()}")
        if not isinstance(row["image"], str) or not row["image"]:
            raise UserError(f"{where}: 'image' must be a file path string")
        if not isinstance(row.get("meta") or {}, dict):
            raise UserError(f"{where}: 'meta' must be a JSON object")

        image = Path(row["image"]).expanduser()
        image = image if image.is_absolute() else root / image
        size = checker.size(image)
        if size is None:
            continue
        try:
            solution = record_solution(task, row["solution"], size, cfg, skipped)
        except ValueError as e:
            raise UserError(f"{where}: {e}") from None
        if solution is None:  # the only box lay outside the image (counted)
            continue
        fields = prompt_fields(task, row, cfg)
        records.append(
            Record(
                image=str(image),
                task=task,
                solution=solution,
                fields=fields,
                prompt=row.get("prompt"),
                image_size=size,
                meta={"source": "jsonl", "file_name": row["image"], "line": lineno, **(row.get("meta") or {})},
            )
        )
    return LoadResult(records, skipped, checker.entries)
