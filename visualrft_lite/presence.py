"""The two-stage protocol's first stage: the presence answers, how good they are, and their reuse.

The paper first asks "is there a <category> in the image?" for every candidate (image,
category) pair and asks for boxes only where the answer is yes, so a wrong "yes" costs false
positives and a wrong "no" costs recall. The first stage is half of an eval's time, and its
answers depend only on the model and the question, so `vrft-lite eval` keeps them in
`presence.jsonl` in its folder and a later eval reuses every answer whose key matches:

    key        what decides the answers besides the record: the base model's identity (hub id
               and cached snapshot commit, or a local folder's digest: `modeling/identity.py`),
               the sha256 of the adapter's files, the gate template, and how it is asked
               (quantisation, dtype and device as loaded, pixel limits, thinking, max_new_tokens)
    record     one (image, question) pair: the sha256 of the image's bytes and the rendered
               gate prompt (which names the category), so a split is its records, and a
               --limit subset, a larger split or another split sharing images reuses what
               they have in common
    where      the eval's own folder (an eval stopped after the first stage, rerun into the
               same --out) and every eval folder beside it (where `runs/eval-*` land)
    --force    asks every question again; so does any change to the key

Batch size and attention kernel are not in the key: they change numerics, not answers.

Each line of presence.jsonl: {"key", "record", "image", "category", "completion", "present"
(the yes/no read from it, null when neither), "truth", "resized_size"}. Lines are appended as
each batch is answered, so a stopped eval keeps what it asked; a torn last line is skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visualrft_lite.answers import parse_yes_no
from visualrft_lite.atomic import write_text
from visualrft_lite.data.records import Record
from visualrft_lite.plot import json_objects
from visualrft_lite.rundir import EvalDir, recognise

Answer = tuple[str, tuple[int, int] | None, str | None]
"""(completion, resized image size, error): what `evaluate.answer_records` returns per record."""
Ask = Callable[[Sequence[Record], Callable[[int, list[Answer]], None]], list[Answer]]
"""Answer records, calling back (offset, answers) after each batch."""
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def adapter_digest(adapter: Path | None) -> str | None:
    """sha256 over the adapter's config and weights (None: the base model alone)."""
    if adapter is None:
        return None
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        if (adapter / name).is_file():
            digest.update(f"{name}:{file_sha256(adapter / name)}\n".encode())
    return digest.hexdigest()


def presence_key(cfg: Any, loaded: Any, adapter: Path | None) -> dict[str, Any]:
    """The key of an eval's presence answers (see the module docstring); `loaded`: the model as loaded."""
    from visualrft_lite.modeling.identity import model_identity
    from visualrft_lite.prompts import resolve_template
    from visualrft_lite.tasks import get_task

    m = cfg.model
    return {"model": model_identity(loaded.name), "adapter": adapter_digest(adapter),
            "gate": resolve_template(get_task(cfg.data.task).gate_template, cfg.data.task),
            "asked": {"quant": m.quant, "dtype": str(loaded.dtype).removeprefix("torch."),
                      "device": str(loaded.device.type), "min_pixels": m.min_pixels, "max_pixels": m.max_pixels,
                      "thinking": m.thinking, "max_new_tokens": cfg.eval.max_new_tokens}}


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class ImageDigests:
    """sha256 of each image's bytes, read once per eval however many categories share it."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, image: Any) -> str:
        if isinstance(image, (str, Path)):
            name = str(image)
            if name not in self.seen:
                self.seen[name] = file_sha256(Path(image))
            return self.seen[name]
        if isinstance(image, (bytes, bytearray)):
            return hashlib.sha256(image).hexdigest()
        return hashlib.sha256(repr((image.mode, image.size)).encode() + image.tobytes()).hexdigest()  # a PIL image


@dataclass
class PresenceCache:
    """This eval's presence.jsonl and the earlier answers (same key) it may reuse."""

    path: Path
    key: dict[str, Any]
    prompt: Callable[[Record], str]
    """The rendered gate question of a record."""
    known: dict[str, dict[str, Any]] = field(default_factory=dict)
    """record id -> an earlier line with this key."""
    sources: list[Path] = field(default_factory=list)
    """The presence.jsonl files `known` came from, newest last."""
    image_digest: ImageDigests = field(default_factory=ImageDigests)

    @property
    def hash(self) -> str:
        return key_hash(self.key)

    @classmethod
    def open(cls, out: Path, key: dict[str, Any], prompt: Callable[[Record], str], *, reuse: bool) -> PresenceCache:
        """Earlier answers from `out` itself and the eval folders beside it, unless not `reuse` (--force)."""
        cache = cls(out / EvalDir.PRESENCE, key, prompt)
        if not reuse:
            return cache
        out = out.resolve()
        candidates = [out / EvalDir.PRESENCE] + [p for p in out.parent.glob(f"*/{EvalDir.PRESENCE}")
                                                 if p.parent != out and recognise(p.parent) == "eval"]
        found = []
        for path in candidates:
            lines = [row for row in json_objects(path) if row is not None and row.get("key") == cache.hash
                     and isinstance(row.get("record"), str) and isinstance(row.get("completion"), str)]
            if lines:
                found.append((path.stat().st_mtime, path, lines))
        for _, path, lines in sorted(found, key=lambda f: f[0]):  # the newest answer wins
            cache.known.update((row["record"], row) for row in lines)
            cache.sources.append(path)
        return cache

    def record_id(self, record: Record) -> str:
        text = json.dumps([self.image_digest(record.image), self.prompt(record)])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def line(self, record_id: str, record: Record, answer: Answer, truth: bool) -> dict[str, Any]:
        text, resized, _ = answer
        return {"key": self.hash, "record": record_id, "image": record.image_name,
                "category": record.fields.get("category"), "completion": text, "present": parse_yes_no(text),
                "truth": truth, "resized_size": list(resized) if resized else None}


def gate_answers(records: Sequence[Record], truths: Sequence[bool], ask: Ask,
                 cache: PresenceCache | None) -> tuple[list[Answer], int]:
    """The presence answer of every record, and how many were reused: cached ones as they were,
    the others asked (and appended to presence.jsonl batch by batch)."""
    if cache is None:
        return ask(records, lambda offset, answers: None), 0
    ids = [cache.record_id(rec) for rec in records]
    answers: list[Answer | None] = [None] * len(records)
    for k, rid in enumerate(ids):
        row = cache.known.get(rid)
        if row is not None:
            size = row.get("resized_size")
            answers[k] = (row["completion"], tuple(size) if isinstance(size, list) else None, None)
    reused = [k for k, a in enumerate(answers) if a is not None]
    todo = [k for k, a in enumerate(answers) if a is None]
    lines = [cache.line(ids[k], records[k], answers[k], truths[k]) for k in reused]  # type: ignore[arg-type]
    write_text(cache.path, "".join(json.dumps(row) + "\n" for row in lines))

    def keep(offset: int, batch: list[Answer]) -> None:
        with cache.path.open("a") as f:
            for j, answer in enumerate(batch, start=offset):
                k = todo[j]
                if answer[2] is None:  # an unreadable image is not an answer to keep
                    f.write(json.dumps(cache.line(ids[k], records[k], answer, truths[k])) + "\n")

    for k, answer in zip(todo, ask([records[k] for k in todo], keep), strict=True):
        answers[k] = answer
    done: list[Answer] = [a for a in answers if a is not None]  # every record has one now
    ordered = [cache.line(ids[k], records[k], a, truths[k]) for k, a in enumerate(done) if a[2] is None]
    write_text(cache.path, "".join(json.dumps(row) + "\n" for row in ordered))  # in record order
    return done, len(reused)


def reuse_note(cache: PresenceCache, reused: int, total: int) -> str | None:
    """The one line saying which answers were reused (None when none were)."""
    if not reused:
        return None
    newest = cache.sources[-1].parent if cache.sources else cache.path.parent
    more = f" and {len(cache.sources) - 1} more" if len(cache.sources) > 1 else ""
    return (f"stage 1: reusing {reused} of {total} presence answers from {newest}{more} (same model, adapter, "
            f"gate prompt and images); --force asks again")


def presence_metrics(truths: Sequence[bool], completions: Sequence[str]) -> dict[str, Any]:
    """How good the first stage's decisions are: boxes are asked unless the answer is "no".

    A record counts as present when its truth has boxes; accuracy, precision and recall of the
    decision "ask for boxes" (an answer that is neither yes nor no is asked, and counted in
    `unclear`). Fractions; None where the denominator is 0.
    """
    said = [parse_yes_no(text) for text in completions]
    asked = [s is not False for s in said]
    tp = sum(a and t for a, t in zip(asked, truths))
    fp = sum(a and not t for a, t in zip(asked, truths))
    fn = sum(not a and t for a, t in zip(asked, truths))
    n = len(truths)
    return {"n": n, "yes": said.count(True), "no": said.count(False), "unclear": said.count(None),
            "present": sum(truths),
            "accuracy": (n - fp - fn) / n if n else None,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None}
