"""Output directories of the verbs that write (train, sft, eval, merge): what is in them
(`RunDir`, `EvalDir`: every file name in one place), and never losing a user's file:

    new or empty        used as is
    not empty           refused without --force, with the fix in the message
    --force             replaces only what vrft-lite wrote: the folder must be recognisably one
                        of ours of the same kind, and every entry in it one of that kind's own
                        files; anything else (notes.txt, src/, an eval's output) is refused and
                        nothing at all is deleted
    a failed start      a run folder holding only what a start writes before its first step
                        (its marker, config.yaml, no line in metrics.jsonl, no checkpoint) is
                        reused without --force, so rerunning the command that failed just works;
                        so is an eval folder holding only the presence answers of a stopped eval
                        (kept: the rerun reuses them)
    a file              one line

A folder is recognised by the marker `prepare_output_dir` writes into it (`.vrft-lite.json`),
or, for folders written before the marker existed, by its own files: a run by config.yaml
with metrics.jsonl, checkpoints/ or final/; an eval by metrics.json with predictions.jsonl;
a merge by merge_info.json.

`recover_jsonl` makes a log whole again after a crash or a full disk: it drops a half-written
line (and, for a resume, the lines after the checkpoint's step) and says what it dropped.

Pure: stdlib only.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from visualrft_lite.atomic import write_bytes
from visualrft_lite.errors import UserError

if TYPE_CHECKING:
    from visualrft_lite.config import Config

Kind = Literal["run", "eval", "merge"]

MARKER = ".vrft-lite.json"
"""Written into every folder `prepare_output_dir` hands out: {"kind": "run" | "eval" | "merge"}."""


class RunDir:
    """A training run's folder and the name of everything train / sft write into it."""

    CONFIG = "config.yaml"  # the resolved config (rerun with --preset RUN/config.yaml)
    METRICS = "metrics.jsonl"  # one line per step
    SAMPLES = "samples.jsonl"  # completions with their rewards, every train.samples_every steps
    HELDOUT = "heldout.jsonl"  # the held-out rows (before training, after the warm-up, at the end)
    HELDOUT_ANSWERS = "heldout_answers.jsonl"  # every greedy answer behind those rows
    SKIPPED = "skipped.jsonl"  # every file left out, at load time and mid-run
    ALERTS = "alerts.jsonl"  # health warnings
    CHECKPOINTS = "checkpoints"  # step-N/: adapter + optimizer, RNG and data position
    FINAL = "final"  # the last adapter (+ processor)
    SFT_MODEL = "sft_model"  # the warmed-up model GRPO starts from (unquantised bases)
    CURVES = "curves.png"
    TENSORBOARD, WANDB, SAMPLE_FIGURES = "tensorboard", "wandb", "samples"
    LOGS = (METRICS, SAMPLES, HELDOUT, HELDOUT_ANSWERS, ALERTS, SKIPPED)
    """The JSONL logs; lines with a "step" past a resumed checkpoint are redone, so dropped."""
    STEP_FILES = (CHECKPOINTS, FINAL, SFT_MODEL)
    """What only a run that finished a step has (besides lines in metrics.jsonl)."""
    OWN = (CONFIG, *LOGS, TENSORBOARD, WANDB, SAMPLE_FIGURES, *STEP_FILES, CURVES, ".tmp-*", ".old-*")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def of_adapter(cls, adapter: Path) -> RunDir | None:
        """The run an adapter belongs to: RUN/final, or RUN/checkpoints/step-N; None for a bare adapter."""
        for folder in (adapter.parent, adapter.parent.parent):
            if (folder / cls.CONFIG).is_file():
                return cls(folder)
        return None

    def write_config(self, cfg: Config) -> None:
        from visualrft_lite.atomic import write_text

        write_text(self / self.CONFIG, cfg.to_yaml())

    def read_config(self, overrides: Sequence[str] = (), *, plugins: Sequence[str] = ()) -> Config:
        """The run's own config.yaml (its plugins loaded), with `overrides` applied."""
        from visualrft_lite.config import apply_overrides, config_from_dict, read_yaml

        path = self / self.CONFIG
        if not path.is_file():
            raise UserError(f"{self.path} is not a run directory (no {self.CONFIG}); pass the --out of an earlier train")
        return config_from_dict(apply_overrides(read_yaml(path), list(overrides)), str(path), plugins=plugins,
                                relative_to=self.path)

    def resume_config(self, overrides: Sequence[str] = ()) -> Config:
        """config.yaml for --resume: only the length of the run and its logging may change."""
        allowed = ("train.steps=", "train.save_every=", "train.samples_every=")
        for o in overrides:
            if not o.startswith(allowed):
                raise UserError("--resume keeps the run's config; only train.steps / save_every / samples_every may "
                                f"change (got --set {o})")
        return self.read_config(overrides)


class EvalDir:
    """An eval's output folder and the names of what `vrft-lite eval` writes into it."""

    METRICS = "metrics.json"
    PREDICTIONS = "predictions.jsonl"
    SKIPPED = "skipped.jsonl"
    PRESENCE = "presence.jsonl"  # the two-stage protocol's first answers, reused by a later eval (presence.py)
    OWN = (METRICS, PREDICTIONS, SKIPPED, PRESENCE, ".tmp-*")


MERGE_INFO = "merge_info.json"
"""What a merged model folder holds besides what save_pretrained writes: how it was made."""

OWN_FILES: dict[str, tuple[str, ...]] = {
    # Everything each verb writes into its folder (names or fnmatch patterns). A name missing
    # here makes --force refuse the folder (safe).
    "run": RunDir.OWN,
    "eval": EvalDir.OWN,
    # A merged model: what save_pretrained writes for the model, its processor and template.
    "merge": (MERGE_INFO, "config.json", "generation_config.json", "*.safetensors",
              "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "added_tokens.json", "vocab.json", "merges.txt", "preprocessor_config.json",
              "video_preprocessor_config.json", "processor_config.json", "chat_template.jinja",
              "chat_template.json", ".tmp-*"),
}

_WHAT = {"run": "a training run", "eval": "an eval's output", "merge": "a merged model"}


@dataclass
class OutputPlan:
    """What `check_output_dir` decided; `apply()` does it."""

    out: Path
    kind: Kind
    remove: list[Path] = field(default_factory=list)
    """vrft-lite's own entries to delete before writing (an earlier output, a failed start)."""
    note: str | None = None
    """A line for the user when an earlier output is replaced or a failed start reused."""

    def apply(self) -> None:
        """Delete the planned entries, create the folder and mark it as this kind's."""
        for path in self.remove:
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / MARKER).write_text(json.dumps({"kind": self.kind}) + "\n")
        except OSError as e:
            raise UserError(f"cannot create {self.out}: {e.strerror or e}; choose a writable directory") from None


def recognise(out: Path) -> Kind | None:
    """Which kind of vrft-lite output `out` holds, or None when it is not one of ours."""
    marker = out / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind in OWN_FILES:
            return kind
    if (out / RunDir.CONFIG).is_file() and any((out / n).exists() for n in (RunDir.METRICS, *RunDir.STEP_FILES[:2])):
        return "run"
    if (out / EvalDir.METRICS).is_file() and (out / EvalDir.PREDICTIONS).is_file():
        return "eval"
    if (out / MERGE_INFO).is_file():
        return "merge"
    return None


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _listing(paths: Sequence[Path], limit: int = 3) -> str:
    names = [p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in sorted(paths)]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _is_failed_start(out: Path, entries: list[Path]) -> bool:
    """Only what a start writes before its first step ends: our marker, config.yaml, logs
    without a step (skipped records, a baseline held-out score), tracker folders."""
    if not (out / MARKER).is_file() or recognise(out) != "run":
        return False
    own = [p for p in entries if p.name != MARKER]
    if any(not _matches(p.name, OWN_FILES["run"]) or p.name in RunDir.STEP_FILES for p in own):
        return False
    metrics = out / RunDir.METRICS
    return not (metrics.is_file() and metrics.read_bytes().strip())  # a logged step: it started for real


def _is_stopped_eval(out: Path, entries: list[Path]) -> bool:
    """An eval of ours that wrote its presence answers and stopped before its metrics."""
    if not (out / MARKER).is_file() or recognise(out) != "eval" or not (out / EvalDir.PRESENCE).is_file():
        return False
    return all(p.name in (MARKER, EvalDir.PRESENCE) or fnmatch.fnmatchcase(p.name, ".tmp-*") for p in entries)


def _run_summary(out: Path) -> str:
    """'checkpoints up to step M' (or none yet) for a refusal message."""
    steps = [int(p.name.split("-")[1]) for p in (out / RunDir.CHECKPOINTS).glob("step-*")
             if p.name.split("-")[1].isdigit()]
    return f"checkpoints up to step {max(steps)}" if steps else "no checkpoint yet"


def check_output_dir(out: Path, *, kind: Kind, force: bool, protected: Sequence[Path] = (),
                     option: str = "--out") -> OutputPlan:
    """Decide what to do with `out` without touching anything; a UserError says why not."""
    resolved = out.expanduser().resolve()
    for p in protected:
        p = Path(p).expanduser().resolve()
        if resolved == p or p.is_relative_to(resolved):
            raise UserError(f"{option} {out} would overwrite {p}, which this command reads; choose another directory")
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out} is a file; choose a directory")
    if not out.exists():
        return OutputPlan(out, kind)
    try:
        entries = list(out.iterdir())
    except OSError as e:
        raise UserError(f"cannot read {option} {out}: {e.strerror or e}; choose another directory") from None
    if not entries or [p.name for p in entries] == [MARKER] and recognise(out) == kind:
        return OutputPlan(out, kind, remove=entries)
    if kind == "run" and _is_failed_start(out, entries):
        return OutputPlan(out, kind, remove=[p for p in entries if p.name != MARKER],
                          note=f"reusing {out}: its earlier start never reached step 1")
    if kind == "eval" and not force and _is_stopped_eval(out, entries):
        return OutputPlan(out, kind, remove=[p for p in entries if p.name not in (MARKER, EvalDir.PRESENCE)],
                          note=f"reusing {out}: its earlier eval stopped before the end "
                               f"(its presence answers are kept)")
    found = recognise(out)
    if not force:
        if found == "run" and kind == "run":
            resume = f"resume it with --resume {out}, " if (out / RunDir.CHECKPOINTS).is_dir() else ""
            raise UserError(f"{option} {out} holds an earlier run ({_run_summary(out)}); {resume}choose another "
                            f"directory, or pass --force to replace it")
        raise UserError(f"{option} {out} is not empty; choose another directory"
                        + (" or pass --force to replace it" if found == kind else ""))
    what = _WHAT[kind].split(" ", 1)[1]
    if found is None:
        raise UserError(f"{option} {out} holds files vrft-lite did not write ({_listing(entries)}); --force only "
                        f"replaces an earlier {what}, so choose another directory")
    if found != kind:
        raise UserError(f"{option} {out} holds {_WHAT[found]}; --force only replaces an earlier {what}, "
                        f"so choose another directory")
    foreign = [p for p in entries if p.name != MARKER and not _matches(p.name, OWN_FILES[kind])]
    if foreign:
        raise UserError(f"{option} {out} holds {_WHAT[kind]} and files vrft-lite did not write "
                        f"({_listing(foreign)}); --force never deletes those: move them or choose another directory")
    return OutputPlan(out, kind, remove=[p for p in entries if p.name != MARKER],
                      note=f"replacing the earlier {what} in {out} (--force)")


def prepare_output_dir(out: Path, *, kind: Kind, force: bool, protected: Sequence[Path] = (),
                       option: str = "--out") -> str | None:
    """Make `out` a new or emptied folder of `kind` (see the module docstring); returns a
    line to show the user (an earlier output replaced, a failed start reused) or None."""
    plan = check_output_dir(out, kind=kind, force=force, protected=protected, option=option)
    plan.apply()
    return plan.note


# ----------------------------------------------------------------------------- logs


def _json_object(line: bytes) -> dict | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _complete_tail(line: bytes) -> tuple[bytes, dict | None]:
    """The longest suffix of a damaged line that is a whole record of the same log: one JSON
    object starting like the line itself (`{"step":`), so a nested object is never taken."""
    colon = line.find(b":")
    if not line.startswith(b"{") or colon == -1:
        return line, None
    head = line[: colon + 1]
    start = line.find(head, 1)
    while start != -1:
        record = _json_object(line[start:])
        if record is not None:
            return line[start:], record
        start = line.find(head, start + 1)
    return line, None


def recover_jsonl(path: Path, keep_until_step: int | None = None, *,
                  echo: Callable[[str], None] | None = print) -> int:
    """Make a JSONL log whole: drop lines a crash or a full disk cut short (a half-written last
    line, NUL padding, anything that is not one JSON object) and, with `keep_until_step`, the
    lines of later steps (a resume redoes them). Rewrites the file atomically only when
    something was dropped, tells `echo` what, and returns how many lines were dropped."""
    if not path.is_file():
        return 0
    raw = path.read_bytes()
    kept: list[bytes] = []
    damaged = later = 0
    for line in raw.split(b"\n"):
        if not line.strip(b" \t\r\x00"):
            damaged += bool(line)  # NUL padding is damage; an empty line (the final "\n") is not
            continue
        record = _json_object(line)
        if record is None:
            damaged += 1
            # a later write appended to a cut-short line: the complete record at its end survives
            line, record = _complete_tail(line)
            if record is None:
                continue
        step = record.get("step")
        if keep_until_step is not None and isinstance(step, int) and step > keep_until_step:
            later += 1
            continue
        kept.append(line.rstrip(b"\r"))
    body = b"".join(line + b"\n" for line in kept)
    if body == raw:
        return 0
    write_bytes(path, body)
    if echo is not None and (damaged or later):
        parts = []
        if damaged:
            parts.append(f"{damaged} damaged line{'s' * (damaged > 1)} (a write cut short)")
        if later:
            parts.append(f"{later} line{'s' * (later > 1)} after step {keep_until_step}")
        echo(f"{path}: dropped {' and '.join(parts)}")
    return damaged + later


def recover_run_logs(run_dir: Path, keep_until_step: int | None, *,
                     echo: Callable[[str], None] | None = print) -> int:
    """`recover_jsonl` on every log of a run (a resume passes its checkpoint's step)."""
    return sum(recover_jsonl(run_dir / name, keep_until_step, echo=echo) for name in RunDir.LOGS)
