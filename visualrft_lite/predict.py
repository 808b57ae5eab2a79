"""`vrft-lite predict`: run a model (plus adapter) on a few images, show what it answers.

    check    the task and its fields (--category, --query, ...) before anything loads
    images   each one decoded up front; an unreadable one is reported and skipped
    prompt   the task's training prompt (`prompts.render_prompt`, the run's data.prompt
             and data.* field defaults when the adapter's run config is found)
    answer   the rollout's decoder, greedy (a batch of eval.batch_size images at once) or --sample
    parse    the task's `parse_answer`: the reward's own reading of the answer, in pixels
             of the original image
    output   reasoning + parsed answer per image, or one JSON object per line; drawings; the
             image tokens of each image (and, before the model loads, of all of them)
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
from visualrft_lite.data.records import Record
from visualrft_lite.errors import UserError
from visualrft_lite.prompts import render_prompt
from visualrft_lite.rewards import parse_prediction
from visualrft_lite.tasks import Task, get_task


@dataclass
class TaskSpec:
    """What to ask: the task and the values its prompt template names (`Task.fields`)."""

    task: str
    fields: dict[str, Any] = field(default_factory=dict)
    """Field name -> value (a list for list fields), from --category, --query, --labels, --kind,
    --attribute and --field NAME=VALUE; empty values are left out."""

    def __post_init__(self) -> None:
        task = get_task(self.task)  # an unknown task names the registered ones
        self.fields = {k: v for k, v in self.fields.items() if v not in (None, "", [])}
        names = [f.name for f in task.fields]
        for name in self.fields:
            if name not in names:
                have = ", ".join(names) or "none"
                raise UserError(f"--{name} does not apply to --task {self.task} (its fields: {have})")
        for f in task.fields:
            if f.required and not str(self.fields.get(f.name, "")).strip():
                option = f"--{f.name}" if f.name in ("category", "query") else f"--field {f.name}=..."
                raise UserError(f"--task {self.task} needs {option} ({f.help}), e.g. {option.split('=')[0]} {f.example}")

    @property
    def definition(self) -> Task:
        return get_task(self.task)


def field_values(task: str, given: dict[str, str | None], extra: Sequence[str] = ()) -> dict[str, Any]:
    """predict's options (`given`: --category, --query, ... as typed) and `--field NAME=VALUE`
    strings -> the spec's fields; list fields are split at commas."""
    fields = {k: v for k, v in given.items() if v is not None}
    for item in extra:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--field expects NAME=VALUE, got {item!r} (e.g. --field options=red,green,blue)")
        fields[name.strip()] = value
    lists = {f.name for f in get_task(task).fields if f.is_list}
    return {k: [x.strip() for x in v.split(",") if x.strip()] if k in lists and isinstance(v, str) else v
            for k, v in fields.items()}


@dataclass
class ImageResult:
    """One image's outcome: an error, or the completion and its parsed answer."""

    image: str
    error: str | None = None
    image_size: tuple[int, int] | None = None
    completion: str | None = None
    image_tokens: int | None = None
    """Image tokens the processor made of it (its resized size / 28 or 32 pixels a side, squared)."""
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
               "image_tokens": self.image_tokens, "completion": self.completion, "reasoning": self.reasoning,
               "answer": self.answer, "parsed": get_task(task).answer_json(self.parsed)}
        if self.drawing is not None:
            out["drawing"] = str(self.drawing)
        return out


# ----------------------------------------------------------------------------- prompts


def prompt_record(image: str, spec: TaskSpec, cfg: Config) -> Record:
    """A record holding only what the task's template needs (no ground truth): the spec's
    fields, else the run's data.* defaults when the run trained this task, else the fallbacks."""
    same_task = cfg.data.task == spec.task
    fields: dict[str, Any] = {}
    for f in spec.definition.fields:
        value = spec.fields.get(f.name)
        if value is None and f.data_default is not None:
            value = getattr(cfg.data, f.data_default) if same_task else f.fallback
        if value is not None:
            fields[f.name] = value.strip() if isinstance(value, str) else value
    return Record(image=image, task=spec.task, solution=None, fields=fields)


def prompt_text(record: Record, spec: TaskSpec, cfg: Config) -> str:
    """The training prompt: the run's data.prompt for this task, else the task's template for these fields."""
    template = cfg.data.prompt if cfg.data.task == spec.task and cfg.data.prompt else None
    if template is None:
        template = spec.definition.template_for(record.fields)
    return render_prompt(record, template, coords=cfg.model.coords)


# ----------------------------------------------------------------------------- output


def format_result(result: ImageResult, spec: TaskSpec) -> str:
    """The human-readable block for one image: reasoning, raw answer, parsed answer."""
    if result.error is not None:
        return f"{result.image}: error: {result.error}"
    w, h = result.image_size or (0, 0)
    tokens = f", {result.image_tokens} image tokens" if result.image_tokens is not None else ""
    lines = [f"{result.image} ({w}x{h}{tokens})"]
    if result.reasoning is not None:
        lines.append(f"  reasoning: {result.reasoning}")
    answer = result.answer
    lines.append(f"  answer: {answer}" if answer is not None else f"  no <answer> tag; completion: {result.completion!r}")
    lines += spec.definition.describe(result.parsed, spec.fields)
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
    task: str,
    fields: dict[str, str | None],
    *,
    extra_fields: Sequence[str] = (),
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
    plugins: Sequence[str] = (),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> list[ImageResult]:
    """Ask `task` (with its prompt `fields` as typed, and `--field NAME=VALUE` strings) about every
    image; print each result as it is ready (in argument order).

    The task may be a plugin's: the adapter's run config (or `plugins`) loads it first. Returns one
    ImageResult per path; unreadable images carry `error` and the rest still run. Raises
    UserError before loading a model when no image is readable or the task's fields are wrong.
    """
    import torch

    from visualrft_lite.draw import drawing_paths
    from visualrft_lite.inference import inference_config, load_for_inference
    from visualrft_lite.modeling.load import resolve_model, token_budget
    from visualrft_lite.decoder import Decoding, decode, encode_inputs

    out = out or sys.stdout
    err = err or sys.stderr
    if not images:
        raise UserError("pass at least one IMAGE")
    results, decoded = read_images(images)
    if not decoded:
        first = results[0].error
        more = f" (and {len(results) - 1} more unreadable)" if len(results) > 1 else ""
        raise UserError(f"{first}{more}")
    cfg = inference_config(preset=preset, overrides=overrides, adapter=adapter, model=model, plugins=plugins)
    spec = TaskSpec(task, field_values(task, fields, extra_fields))  # after the run's plugins are loaded
    cfg = resolve_model(cfg)  # one line in seconds (and the box convention), before anything slow
    draw_to = drawing_paths(draw, list(images)) if draw is not None else None
    if draw is not None and not draw.is_dir():
        draw.parent.mkdir(parents=True, exist_ok=True)
    budget = token_budget(cfg.model)
    if budget is not None:  # the cost before the model loads
        print(f"{cfg.model.name} ({cfg.model.quant}): {budget.describe(im.size for im in decoded.values())}", file=err)
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
    merge = getattr(loaded.processor.image_processor, "merge_size", 2)  # patches per token side
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
                r.image_tokens = int(enc.batch.image_grid_thw[row].prod()) // merge ** 2
                if draw_to is not None:
                    task = spec.definition
                    task.draw_answer(decoded[i], r.parsed, label=task.draw_label(spec.fields)).save(draw_to[i])
                    r.drawing = draw_to[i]
        emit_ready()
    return results
