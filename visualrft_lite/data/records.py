"""The one record type every dataset source yields.

A record is one image plus one question about it plus the verifiable ground truth.
Ground truth is stored in the form `rewards.score` takes (pixels for boxes), so the
same record serves training, evaluation and the `vrft-lite reward` contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Record:
    """One training or evaluation example.

    image:    a file path, the encoded bytes of an image (hub parquet), or a PIL image.
    task:     the registered task that asks and scores it (`visualrft_lite.tasks`).
    fields:   values for the task's prompt template (category, labels, query, kind, ...).
    solution: ground truth as the task keeps it (`Task.record_solution`): classify ->
              {"label", "synonyms"}; detect -> list of pixel boxes [x1, y1, x2, y2] (empty: no
              objects); ground/point -> one pixel box; count -> int; choice -> letter.
    prompt:   the full question text when the source ships one verbatim (hub data);
              otherwise None and the prompt is rendered from the task's template.
    image_size: (width, height) of the original image in pixels, when known.
    meta:     provenance: source, image id, category id, file name, ...
    """

    image: str | Path | bytes | Any
    task: str
    solution: Any
    fields: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    image_size: tuple[int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from visualrft_lite.tasks import TASKS

        TASKS.get(self.task)  # an unknown task is a ValueError naming the tasks

    @property
    def image_name(self) -> str:
        """The image's path, or for an in-memory image its file name / id from the source."""
        if isinstance(self.image, (str, Path)):
            return str(self.image)
        return str(self.meta.get("file_name") or self.meta.get("image_id") or "<in-memory image>")
