"""Dataset sources that all yield `Record`s (see `records.py`)."""

from visualrft_lite.data.records import Record

__all__ = ["Record"]
