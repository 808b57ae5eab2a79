"""`vrft-lite predict`: run a model (plus adapter) on a few images, show what it answers.

    check    the task and its fields (--category, --query, ...) before anything loads
    images   each one decoded up front; an unreadable one is reported and skipped
    prompt   the task's training prompt (`prompts.render_prompt`, the run's data.prompt
             and classification nouns when the adapter's run config is found)
    answer   the rollout's decoder, greedy (a batch of eval.batch_size images at once) or --sample
    parse    `rewards.parse_prediction`: the reward's own reading of the answer, in pixels
             of the original image
    output   reasoning + parsed answer per image, or one JSON object per line; drawings
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from PIL import Image

from visualrft_lite.answers import extract_answer
from visualrft_lite.config import Config
from visualrft_lite.data.images import ImageLoadError, load_image
from visualrft_lite.data.records import TASKS, Record
from visualrft_lite.errors import UserError, did_you_mean
from visualrft_lite.evaluate import parsed_json
from visualrft_lite.prompts import render_prompt
from visualrft_lite.rewards import parse_prediction

NEEDS_QUERY = ("ground", "count", "point", "choice")


@dataclass
class TaskSpec:
    """What to ask: the task and the values its prompt template names."""

    task: str
    category: str | None = None
    """detect: the category to find."""
    labels: list[str] | None = None
    """classify: class names listed in the prompt (optional)."""
    query: str | None = None
    """ground / count / point / choice: the instruction or question."""
    kind: str | None = None
    """classify: the noun ("plant"); default: the adapter's run config, else "object"."""
    attribute: str | None = None
    """classify: what to name ("species"); default: the run config, else "category"."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            hint = did_you_mean(self.task, TASKS)
            raise UserError(f"unknown task {self.task!r}{hint} (choose one of {', '.join(TASKS)})")
        if self.task == "detect" and not (self.category and self.category.strip()):
            raise UserError("--task detect needs --category NAME, e.g. --category bus")
        if self.task in NEEDS_QUERY and not (self.query and self.query.strip()):
            example = {"ground": '"the cup nearest the laptop"', "count": '"How many cars are there?"',
                       "point": '"the handle of the mug"', "choice": '"Which shape is red? A. circle B. star"'}
            raise UserError(f"--task {self.task} needs --query TEXT, e.g. --query {example[self.task]}")
        if self.labels is not None and self.task != "classify":
            raise UserError("--labels only applies to --task classify")


@dataclass
class ImageResult:
    """One image's outcome: an error, or the completion and its parsed answer."""

    image: str
    error: str | None = None
    image_size: tuple[int, int] | None = None
    completion: str | None = None
    parsed: Any = None
    drawing: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reasoning(self) -> str | None:
        match = re.search(r"<think>(.*?)</think>", self.completion or "", re.DOTALL)
        return match.group(1).strip() if match else None

    @property
    def answer(self) -> str | None:
        return extract_answer(self.completion) if self.completion is not None else None

    def to_json(self, task: str) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        out = {"image": self.image, "task": task, "image_size": list(self.image_size or ()),
               "completion": self.completion, "reasoning": self.reasoning, "answer": self.answer,
               "parsed": parsed_json(task, self.parsed)}
        if self.drawing is not None:
            out["drawing"] = str(self.drawing)
        return out


# ----------------------------------------------------------------------------- prompts


def prompt_record(image: str, spec: TaskSpec, cfg: Config) -> Record:
    """A record holding only what the task's template needs (no ground truth)."""
    data = cfg.data
    same_task = data.task == spec.task
    fields: dict[str, Any] = {}
    if spec.task == "classify":
        fields["kind"] = spec.kind or (data.kind if same_task else "object")
        fields["attribute"] = spec.attribute or (data.attribute if same_task else "category")
        if spec.labels:
            fields["labels"] = spec.labels
    if spec.category is not None:
        fields["category"] = spec.category.strip()
    if spec.query is not None:
        fields["query"] = spec.query.strip()
    return Record(image=image, task=spec.task, solution=None, fields=fields)  # type: ignore[arg-type]


def prompt_text(record: Record, spec: TaskSpec, cfg: Config) -> str:
    """The training prompt: the run's data.prompt for this task, else the task's template."""
    template = cfg.data.prompt if cfg.data.task == spec.task and cfg.data.prompt else None
    if template is None and spec.task == "classify" and spec.labels:
        template = "classify_labels"
    return render_prompt(record, template, coords=cfg.model.coords)


# ----------------------------------------------------------------------------- output


def format_result(result: ImageResult, spec: TaskSpec) -> str:
    """The human-readable block for one image: reasoning, raw answer, parsed answer."""
    if result.error is not None:
        return f"{result.image}: error: {result.error}"
    w, h = result.image_size or (0, 0)
    lines = [f"{result.image} ({w}x{h})"]
    if result.reasoning is not None:
        lines.append(f"  reasoning: {result.reasoning}")
    answer = result.answer
    lines.append(f"  answer: {answer}" if answer is not None else f"  no <answer> tag; completion: {result.completion!r}")
    p = result.parsed
    if spec.task == "detect":
        lines.append(f"  {len(p)} {spec.category} box{'es' if len(p) != 1 else ''} (pixels x1, y1, x2, y2; confidence)")
        lines += [f"    [{', '.join(f'{v:.0f}' for v in box)}]  {conf:.2f}" for box, conf in p]
    elif spec.task == "ground":
        lines.append("  box: none" if p is None else f"  box (pixels x1, y1, x2, y2): [{', '.join(f'{v:.0f}' for v in p)}]")
    elif spec.task == "point":
        lines.append(f"  {len(p)} point{'s' if len(p) != 1 else ''} (pixels x, y): "
                     + ", ".join(f"({x:.0f}, {y:.0f})" for x, y in p))
    else:
        lines.append(f"  parsed: {p if p is not None else 'none'}")
    if result.drawing is not None:
        lines.append(f"  drawing: {result.drawing}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- predict


def read_images(paths: Sequence[str]) -> tuple[list[ImageResult], dict[int, Image.Image]]:
    """One result per path (errors filled in for unreadable ones) and the decoded images by index."""
    results, images = [], {}
    for i, path in enumerate(paths):
        try:
            image = load_image(path)
        except ImageLoadError as e:
            results.append(ImageResult(image=path, error=str(e)))
            continue
        images[i] = image
        results.append(ImageResult(image=path, image_size=image.size))
    return results, images


def predict(
    images: Sequence[str],
    spec: TaskSpec,
    *,
    model: str | None = None,
    adapter: Path | None = None,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    draw: Path | None = None,
    as_json: bool = False,
    sample: bool = False,
    seed: int = 0,
    max_new_tokens: int | None = None,
    allow_mismatch: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> list[ImageResult]:
    """Answer `spec` on every image; print each result as it is ready (in argument order).

    Returns one ImageResult per path; unreadable images carry `error` and the rest still
    run. Raises UserError before loading a model when no image is readable.
    """
    import torch

    from visualrft_lite.draw import draw_answer, drawing_paths
    from visualrft_lite.generate import inference_config, load_for_inference
    from visualrft_lite.modeling.load import resolve_model
    from visualrft_lite.rollout import Decoding, decode, encode_inputs

    out = out or sys.stdout
    err = err or sys.stderr
    if not images:
        raise UserError("pass at least one IMAGE")
    results, decoded = read_images(images)
    if not decoded:
        first = results[0].error
        more = f" (and {len(results) - 1} more unreadable)" if len(results) > 1 else ""
        raise UserError(f"{first}{more}")
    cfg = inference_config(preset=preset, overrides=overrides, adapter=adapter, model=model)
    resolve_model(cfg)  # one line in seconds (and the box convention), before anything slow
    draw_to = drawing_paths(draw, list(images)) if draw is not None else None
    if draw is not None and not draw.is_dir():
        draw.parent.mkdir(parents=True, exist_ok=True)
    loaded = load_for_inference(cfg.model, adapter, allow_mismatch=allow_mismatch)
    generator = torch.Generator(device=loaded.device)
    generator.manual_seed(seed)
    tokens = max_new_tokens or cfg.eval.max_new_tokens

    printed = 0

    def emit_ready() -> None:
        nonlocal printed
        while printed < len(results) and (results[printed].error is not None or results[printed].completion is not None):
            r = results[printed]
            if as_json:
                print(json.dumps(r.to_json(spec.task)), file=out, flush=True)
            elif r.error is not None:
                print(format_result(r, spec), file=err, flush=True)
            else:
                print(format_result(r, spec), file=out, flush=True)
            printed += 1

    todo = sorted(decoded)
    batch = cfg.eval.batch_size
    decoding = Decoding.sampling(cfg.rollout, tokens) if sample else Decoding.greedy_search(tokens)
    emit_ready()
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        prompts = [prompt_text(prompt_record(images[i], spec, cfg), spec, cfg) for i in chunk]
        enc = encode_inputs(loaded.model, loaded.processor, [decoded[i] for i in chunk], prompts, loaded.device)
        for k, reason in enc.failed.items():
            results[chunk[k]].error = f"{images[chunk[k]]}: {reason}"
        if enc.batch is not None:
            answers = decode(loaded.model, loaded.processor, enc.batch, enc.features, decoding, generator=generator)
            for row, k in enumerate(enc.kept):
                i, r = chunk[k], results[chunk[k]]
                r.parsed = parse_prediction(spec.task, answers.texts[row], image_size=decoded[i].size,
                                            resized_size=enc.batch.resized_sizes[row], options=cfg.reward)
                r.completion = answers.texts[row]
                if draw_to is not None:
                    label = spec.category if spec.task == "detect" else spec.query
                    draw_answer(decoded[i], spec.task, r.parsed, label=label).save(draw_to[i])
                    r.drawing = draw_to[i]
        emit_ready()
    return results
