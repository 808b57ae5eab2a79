"""Dataset sources that all yield `Record`s (see `records.py`)."""

from visualrft_lite.data.records import TASKS, Record

__all__ = ["TASKS", "Record"]
