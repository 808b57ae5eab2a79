"""A run directory's logs: one JSON object per line, appended by the main process only.

    metrics.jsonl          one line per step
    samples.jsonl          a few completions with their rewards, every train.samples_every steps
    heldout.jsonl          the held-out rows (before training, after the warm-up, at the end)
    heldout_answers.jsonl  every greedy answer behind those rows
    skipped.jsonl          every file left out: at load time, and images that failed mid-run
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RunLog:
    """Appends to the run's JSONL files; a no-op on processes other than the main one."""

    def __init__(self, run_dir: Path, *, enabled: bool) -> None:
        self.run_dir, self.enabled = run_dir, enabled

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        if self.enabled and rows:
            with (self.run_dir / name).open("a") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)

    def metrics(self, m: dict[str, Any]) -> None:
        self._append("metrics.jsonl", [m])

    def samples(self, rows: list[dict[str, Any]]) -> None:
        self._append("samples.jsonl", rows)

    def skipped(self, entries: list[Any]) -> None:
        from visualrft_lite.data.skips import write_skipped

        if self.enabled:
            write_skipped(self.run_dir / "skipped.jsonl", entries, append=True)

    def heldout(self, row: dict[str, Any], answers: list[dict[str, Any]]) -> None:
        self._append("heldout.jsonl", [row])
        self._append("heldout_answers.jsonl", answers)
