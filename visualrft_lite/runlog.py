"""A run directory's logs: one JSON object per line, appended by the main process only.

The file names are `RunDir`'s: metrics.jsonl (one line per step), samples.jsonl (completions
with their rewards), heldout.jsonl and heldout_answers.jsonl (the held-out rows and every
greedy answer behind them), skipped.jsonl (every file left out, at load time and mid-run).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from visualrft_lite.rundir import RunDir


class RunLog:
    """Appends to the run's JSONL files; a no-op on processes other than the main one."""

    def __init__(self, run: RunDir, *, enabled: bool) -> None:
        self.run, self.enabled = run, enabled

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        if self.enabled and rows:
            with (self.run / name).open("a") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)

    def metrics(self, m: dict[str, Any]) -> None:
        self._append(RunDir.METRICS, [m])

    def samples(self, rows: list[dict[str, Any]]) -> None:
        self._append(RunDir.SAMPLES, rows)

    def skipped(self, entries: Iterable[Any]) -> None:
        from visualrft_lite.data.skips import write_skipped

        if self.enabled:  # an empty list still creates the file: "nothing was skipped"
            write_skipped(self.run / RunDir.SKIPPED, entries, append=True)

    def heldout(self, row: dict[str, Any], answers: list[dict[str, Any]]) -> None:
        self._append(RunDir.HELDOUT, [row])
        self._append(RunDir.HELDOUT_ANSWERS, answers)
