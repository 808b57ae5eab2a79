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

from visualrft_lite.answers import answer_or_text, parse_solution
from visualrft_lite.data.common import ImageChecker, LoadResult, clip_boxes
from visualrft_lite.data.records import TASKS, Record
from visualrft_lite.errors import UserError

if TYPE_CHECKING:
    from visualrft_lite.config import DataConfig

FIELD_KEYS = ("query", "instruction", "category", "labels", "options", "kind", "attribute", "think")
KNOWN_KEYS = {"image", "task", "solution", "prompt", "meta", *FIELD_KEYS}


def classify_solution(solution: Any, synonyms: dict[str, list[str]]) -> dict[str, Any]:
    """Any accepted classification truth -> {"label", "synonyms"} (the Record form)."""
    parse_solution("classify", solution)  # validates; raises ValueError
    if isinstance(solution, str):
        label, extra = answer_or_text(solution), []
    elif isinstance(solution, dict):
        label, extra = solution["label"], list(solution.get("synonyms") or [])
    else:
        label, extra = solution[0], list(solution[1:])
    return {"label": label, "synonyms": extra + [s for s in synonyms.get(label, []) if s not in extra]}


def record_solution(task: str, solution: Any, size: tuple[int, int], cfg: DataConfig, skipped: Counter[str]) -> Any:
    """Parse truth into Record form; boxes clipped to the image (counted). ValueError if unreadable."""
    if task == "classify":
        return classify_solution(solution, cfg.synonyms)
    parsed = parse_solution(task, solution, image_size=size)
    if task == "detect":
        return clip_boxes(parsed, size, skipped)
    if task in ("ground", "point"):
        boxes = clip_boxes([parsed], size, skipped)
        return boxes[0] if boxes else None
    return parsed


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
        unknown = sorted(set(row) - KNOWN_KEYS)
        if unknown:
            raise UserError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KNOWN_KEYS))})")
        task = row.get("task", cfg.task)
        if task not in TASKS:
            raise UserError(f"{where}: unknown task {task!r}; choose one of {', '.join(TASKS)}")
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
        fields = {k: row[k] for k in FIELD_KEYS if k in row}
        if task == "classify":
            fields.setdefault("kind", cfg.kind)
            fields.setdefault("attribute", cfg.attribute)
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
