"""`vrft-lite eval`: greedy answers on a held-out split, scored the way the paper reports them.

    generate   batched greedy completions (the rollout's decoder with sampling off), progress bar
    score      `score_completions(records, completions)`: pure, no model, so tests feed
               hand-made completions; every number goes through the task's own scorer
               (`rewards.Scorer`), so training and evaluation never disagree
    write      predictions.jsonl (completion, parsed answer, per-sample reward),
               metrics.json, and a table on stdout

The metrics are each task's (`Task.metrics`: accuracy, COCO or LVIS mAP, mIoU, ...; fractions
in metrics.json, the table prints them x100 like the paper). The two-stage protocol
(`eval.two_stage`, the paper's, for a task with a gate question such as detection's "is there
a ...?") asks the gate first and the task's question only where the answer is not "no"; a
"no" counts as no answer. Its answers are kept and reused (`presence.py`), and how good they
are is reported beside the task's metrics. For a preset of the paper, the paper's own figures
for the setting are printed beside the measured one and kept in metrics.json (`paper.py`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visualrft_lite.answers import parse_yes_no
from visualrft_lite.atomic import write_text
from visualrft_lite.data.common import Skip
from visualrft_lite.data.records import Record
from visualrft_lite.data.skips import skipped_lines, unreadable, write_skipped
from visualrft_lite.errors import UserError
from visualrft_lite.presence import Answer, PresenceCache, gate_answers, presence_metrics, reuse_note
from visualrft_lite.rewards import RewardOptions, Scorer
from visualrft_lite.rundir import EvalDir
from visualrft_lite.tasks import TASKS, Scored, get_task, mean_of


@dataclass
class Evaluation:
    """What `score_completions` returns: the metrics and one row per record."""

    task: str
    metrics: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- scoring


def score_completions(
    records: Sequence[Record],
    completions: Sequence[str | None],
    *,
    options: RewardOptions | None = None,
    resized_sizes: Sequence[tuple[int, int] | None] | None = None,
) -> Evaluation:
    """Metrics and per-record rows for one task's records and their completions.

    A completion of None means the model was not asked (the two-stage gate said "no"): no
    answer, and it is left out of the format rate and the mean reward. Tasks with coordinates
    need each record's `image_size`; `resized_sizes` only for `coords: resized`.
    """
    if len(records) != len(completions):
        raise ValueError(f"{len(records)} records but {len(completions)} completions")
    if not records:
        raise UserError("no records to evaluate; check the data section (and --limit)")
    names = sorted({r.task for r in records})
    if len(names) != 1:
        raise ValueError(f"evaluate one task at a time; got {', '.join(names)}")
    task = get_task(names[0])
    resized = list(resized_sizes) if resized_sizes is not None else [None] * len(records)

    rows: list[dict[str, Any]] = []
    scored: list[Scored] = []
    for i, (rec, completion) in enumerate(zip(records, completions)):
        size = tuple(rec.image_size) if rec.image_size is not None else None
        if task.coordinates and size is None:
            raise ValueError(f"record {i} ({rec.image_name}) has no image_size; {task.name} needs it")
        scorer = Scorer(task.name, rec.solution, image_size=size, resized_size=resized[i], options=options)
        if completion is None:
            one = Scored(rec, scorer.truth, task.parse_answer(None, scorer.coord_map), None)
        else:
            one = Scored(rec, scorer.truth, scorer.parse(completion), scorer.score(completion))
        scored.append(one)
        row: dict[str, Any] = {"index": i, "image": rec.image_name, "task": task.name}
        if rec.fields.get("category") is not None:
            row["category"] = rec.fields["category"]
        row.update(completion=completion, reward=one.reward, parsed=task.answer_json(one.parsed), **task.row(one))
        if rec.meta:
            row["meta"] = {k: v for k, v in rec.meta.items() if k != "crowd_boxes"}
        rows.append(row)

    asked = [s.reward for s in scored if s.reward is not None]
    metrics: dict[str, Any] = {
        "task": task.name,
        "n": len(records),
        "format_rate": mean_of(r["format"] for r in asked),
        "mean_reward": mean_of(r["total"] for r in asked),
    }
    metrics.update(task.metrics(scored))
    metrics["headline"] = task.headline
    return Evaluation(task=task.name, metrics=metrics, rows=rows)


# ----------------------------------------------------------------------------- the table


PROTOCOLS = {"two-stage": "two-stage: is it present? then boxes where it is (the paper's protocol)",
             "one-stage": "one-stage: boxes asked for every record (--one-stage; the paper asks presence first)"}
"""metrics.json's `protocol` (tasks with a gate question) -> the table's line."""


def _pct(value: float | None) -> str:
    return "   -" if value is None else f"{100 * value:6.1f}"


def metrics_table(metrics: dict[str, Any], title: str = "") -> str:
    """The metrics as a small text table, in percent like the paper's tables."""
    head = f"{title}  " if title else ""
    stages = PROTOCOLS.get(metrics.get("protocol", ""))
    lines = [f"{head}{metrics['task']}, {metrics['n']} records (percent)", *([stages] if stages else []), "-" * 44]
    rows = [*get_task(metrics["task"]).metric_lines(metrics), ("format", metrics["format_rate"])]
    gate = metrics.get("presence")
    if gate:
        rows += [f"stage 1: {gate['yes']} yes, {gate['no']} no, {gate['unclear']} unclear; {gate['present']} present",
                 *((f"  presence {name}", gate[name]) for name in ("accuracy", "precision", "recall"))]
    lines += [row if isinstance(row, str) else f"{row[0]:<30}{_pct(row[1])}" for row in rows]
    if metrics.get("mean_reward") is not None:
        lines.append(f"{'mean reward (not percent)':<30}{metrics['mean_reward']:6.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command

def data_overrides(spec: str) -> list[str]:
    """`--data SOURCE:PATH` (any registered data source, or a bare PATH whose kind is clear) ->
    `--set data.*` overrides.

    >>> data_overrides("coco:ann/instances_val2017.json")
    ['data.source=coco', 'data.path=ann/instances_val2017.json', 'data.eval_path=ann/instances_val2017.json']
    >>> data_overrides("synthetic")
    ['data.source=synthetic', 'data.eval_path=null']
    """
    from visualrft_lite.data.sources import SOURCES

    source, sep, path = spec.partition(":")
    if not sep or source not in SOURCES:  # a bare path (Windows drive letters included), or a bare source
        source, path = "", spec
        p = Path(spec).expanduser()
        by_suffix = {suffix: e.name for e in SOURCES.entries() for suffix in e.value.suffixes}
        if spec in SOURCES and not SOURCES.get(spec).needs_path:
            source, path = spec, ""
        elif p.is_dir():
            source = "folder"
        elif p.suffix in by_suffix:
            source = by_suffix[p.suffix]
        else:
            raise UserError(f"--data {spec}: say which kind it is as SOURCE:PATH, SOURCE one of {SOURCES.choices()} "
                            f"(e.g. --data coco:annotations/instances_val2017.json)")
    if not SOURCES.get(source).needs_path:
        return [f"data.source={source}", *([f"data.path={path}"] if path else []), "data.eval_path=null"]
    if not path:
        raise UserError(f"--data {spec}: give the path after the colon, e.g. --data {source}:PATH")
    return [f"data.source={source}", f"data.path={path}", f"data.eval_path={path}"]


def default_out_dir(cfg_name: str, adapter: Path | None) -> Path:
    tag = "" if adapter is not None else "-base"
    return Path("runs") / f"eval-{cfg_name}{tag}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_eval(
    *,
    preset: str | None = None,
    data: str | None = None,
    task: str | None = None,
    overrides: Sequence[str] = (),
    adapter: Path | None = None,
    model: str | None = None,
    limit: int | None = None,
    out: Path | None = None,
    force: bool = False,
    two_stage: bool | None = None,
    quiet: bool = False,
    allow_mismatch: bool = False,
    plugins: Sequence[str] = (),
) -> tuple[Evaluation, Path]:
    """Evaluate the base model (or base + adapter) on the eval split; returns the result and --out."""
    from visualrft_lite.data.common import apply_limit
    from visualrft_lite.data.sources import load_records
    from visualrft_lite.inference import inference_config, load_for_inference
    from visualrft_lite.modeling.load import resolve_model
    from visualrft_lite.rundir import prepare_output_dir
    from visualrft_lite.train import startup_budget

    if preset is None and data is None and adapter is None:
        raise UserError("say what to evaluate on: --preset NAME, --data SOURCE:PATH, or --adapter DIR of a run")
    extra = [*(data_overrides(data) if data else []), *([f"data.task={task}"] if task else []), *overrides]
    cfg = inference_config(preset=preset, overrides=extra, adapter=adapter, model=model, plugins=plugins)
    limit = limit or cfg.eval.limit
    two_stage = cfg.eval.two_stage if two_stage is None else two_stage
    if two_stage and get_task(cfg.data.task).gate_template is None:
        gated = ", ".join(e.name for e in TASKS.entries() if e.value.gate_template) or "none"
        raise UserError(f"--two-stage asks a yes/no gate question first, which task {cfg.data.task} has none of "
                        f"(tasks with one: {gated}); drop --two-stage")
    cfg = resolve_model(cfg)  # everything cheap first: model (and its box convention), data, output folder
    loaded_records = load_records(cfg.data, "eval")
    records = apply_limit(loaded_records.records, limit, cfg.data.seed)  # as a run's eval.heldout: N picks them
    if not records:
        raise UserError(f"no usable eval records ({loaded_records.summary()}); check data.eval_path / the data section")
    out = out or default_out_dir(cfg.name, adapter)
    note = prepare_output_dir(out, kind="eval", force=force, protected=[adapter] if adapter else [])
    say = (lambda *_: None) if quiet else print
    if note:
        say(note)
    say(f"evaluating {cfg.model.name}{f' + {adapter}' if adapter else ''} on {len(records)} {cfg.data.task} records"
        f"{f' (of {len(loaded_records.records)})' if len(records) < len(loaded_records.records) else ''}"
        f"{'; two-stage' if two_stage else ''}{startup_budget(cfg, records)}")
    loaded = load_for_inference(cfg.model, adapter, allow_mismatch=allow_mismatch)
    cache = None
    if two_stage:
        from visualrft_lite.presence import presence_key
        from visualrft_lite.prompts import render_prompt

        gate = get_task(cfg.data.task).gate_template
        cache = PresenceCache.open(out, presence_key(cfg, loaded, adapter),
                                   lambda rec: render_prompt(rec, gate, coords=cfg.model.coords), reuse=not force)

    started = time.time()
    evaluation, late = evaluate_records(loaded.model, loaded.processor, loaded.device, cfg, records,
                                        two_stage=two_stage, quiet=quiet, cache=cache)
    skips = loaded_records.files + late  # left out of both sides of every metric
    for line in skipped_lines(skips):
        say(line)
    write_skipped(out / EvalDir.SKIPPED, skips)
    evaluation.metrics.update({
        "model": cfg.model.name,
        "adapter": str(adapter) if adapter else None,
        "two_stage": two_stage,
        "skipped": dict(loaded_records.skipped) | ({"unreadable at eval": len(late)} if late else {}),
        "max_new_tokens": cfg.eval.max_new_tokens,
        "seconds": round(time.time() - started, 1),
    })
    evaluation.metrics["preset"] = cfg.name
    paper_lines = paper_beside(evaluation.metrics, cfg, data=data, of=len(loaded_records.records))
    write_outputs(evaluation, out)
    if not quiet:
        print(metrics_table(evaluation.metrics, title=cfg.name))
        for line in paper_lines:
            print(line)
        print(f"wrote {out / EvalDir.METRICS} and {out / EvalDir.PREDICTIONS}"
              + (f" and {out / EvalDir.PRESENCE}" if two_stage else ""))
    return evaluation, out


def paper_beside(metrics: dict[str, Any], cfg: Any, *, data: str | None, of: int) -> list[str]:
    """The paper's figures for the config's setting, into metrics["paper"], and the lines to print
    (none for a config that is no setting of the paper), with what makes ours differ from theirs."""
    from visualrft_lite.paper import Setting, paper_block, paper_record, setting_for_preset

    setting = setting_for_preset(cfg.name, cfg.model.name)
    notes = []
    if data:
        notes.append(f"measured on --data {data}, not the preset's eval split")
    if metrics["n"] < of:
        notes.append(f"measured on {metrics['n']} of the split's {of} records")
    if metrics.get("protocol") == "one-stage":
        notes.append("measured one-stage; the paper asks whether the category is present first: drop --one-stage")
    metrics["paper"] = {**paper_record(setting, metrics), **({"notes": notes} if notes else {})}
    if not isinstance(setting, Setting):
        return []
    return [*paper_block(setting, metrics), *(f"  ({note})" for note in notes)]


def heldout_records(cfg: Any, n: int) -> list[Record]:
    """The records a run's `eval.heldout: n` table scores: what `vrft-lite eval --limit n` scores."""
    from visualrft_lite.data.common import apply_limit
    from visualrft_lite.data.sources import load_records

    return apply_limit(load_records(cfg.data, "eval").records, n, cfg.data.seed)


def write_outputs(evaluation: Evaluation, out: Path) -> None:
    write_text(out / EvalDir.PREDICTIONS, "".join(json.dumps(row) + "\n" for row in evaluation.rows))
    write_text(out / EvalDir.METRICS, json.dumps(evaluation.metrics, indent=2) + "\n")


def evaluate_records(model: Any, processor: Any, device: Any, cfg: Any, records: Sequence[Record], *,
                     two_stage: bool = False, quiet: bool = True, desc: str = "eval",
                     cache: PresenceCache | None = None) -> tuple[Evaluation, list[Skip]]:
    """Greedy answers for `records`, scored: the one evaluator of `vrft-lite eval` and a run's held-out table.

    Records whose image cannot be read (or that the processor refuses) are left out of both
    sides of every metric and returned with their reason. Two-stage, `cache` keeps the
    presence answers and supplies earlier ones (`presence.py`).
    """
    task = get_task(cfg.data.task)
    records, unusable = _with_sizes(list(records))
    if two_stage:
        def ask(chosen: Sequence[Record], on_batch: Any) -> list[Answer]:
            return answer_records(model, processor, device, cfg, chosen, task.gate_template, quiet=quiet,
                                  desc="stage 1 (present?)", on_batch=on_batch)

        truths = [bool(task.parse_truth(rec.solution, image_size=rec.image_size)) for rec in records]
        presence, reused = gate_answers(records, truths, ask, cache)
        note = reuse_note(cache, reused, len(records)) if cache is not None else None
        if note and not quiet:
            print(note)
        unusable += [(records[i], err) for i, (_, _, err) in enumerate(presence) if err]
        truths = [t for t, (_, _, err) in zip(truths, presence) if not err]
        kept = [i for i, (_, _, err) in enumerate(presence) if not err]
        records, presence = [records[i] for i in kept], [presence[i] for i in kept]
        asked = [i for i, (text, _, _) in enumerate(presence) if parse_yes_no(text) is not False]
        boxes = answer_records(model, processor, device, cfg, [records[i] for i in asked], None, quiet=quiet,
                               desc="stage 2 (boxes)")
        completions: list[str | None] = [None] * len(records)
        resized: list[tuple[int, int] | None] = [size for _, size, _ in presence]
        for i, (text, size, err) in zip(asked, boxes):
            completions[i], resized[i] = (text, size) if not err else ("", resized[i])
    else:
        answers = answer_records(model, processor, device, cfg, records, None, quiet=quiet, desc=desc)
        unusable += [(records[i], err) for i, (_, _, err) in enumerate(answers) if err]
        kept = [i for i, (_, _, err) in enumerate(answers) if not err]
        records = [records[i] for i in kept]
        completions = [answers[i][0] for i in kept]
        resized = [answers[i][1] for i in kept]
    if not records:
        raise UserError(f"no eval image could be read ({len(unusable)} unreadable, e.g. {unusable[0][1]})"
                        if unusable else "no records to evaluate; check the data section (and --limit)")
    evaluation = score_completions(records, completions, options=cfg.reward, resized_sizes=resized)
    if task.gate_template is not None:
        evaluation.metrics["protocol"] = "two-stage" if two_stage else "one-stage"
    if two_stage:
        for row, (text, _, _) in zip(evaluation.rows, presence):
            row["presence_completion"] = text
            row["present"] = parse_yes_no(text)
        evaluation.metrics["presence"] = {**presence_metrics(truths, [text for text, _, _ in presence]),
                                          "reused": reused}
        if cache is not None:
            evaluation.metrics["presence"].update(key=cache.key, key_hash=cache.hash)
    return evaluation, [unreadable(rec, why, "eval-step") for rec, why in unusable]


def _with_sizes(records: list[Record]) -> tuple[list[Record], list[tuple[Record, str]]]:
    """Records with image_size filled in (box tasks need it); unreadable images set aside with the reason."""
    from visualrft_lite.data.images import ImageLoadError, probe_image

    kept, dropped = [], []
    for rec in records:
        if rec.image_size is None:
            try:
                rec = dataclasses.replace(rec, image_size=probe_image(rec.image))
            except ImageLoadError as e:
                dropped.append((rec, str(e)))
                continue
        kept.append(rec)
    return kept, dropped


def answer_records(model: Any, processor: Any, device: Any, cfg: Any, records: Sequence[Record],
                   template: str | None, *, quiet: bool, desc: str,
                   on_batch: Any = None) -> list[Answer]:
    """Greedy (completion, resized size, error) per record, eval.batch_size prompts decoded together.

    Decoding is the rollout's decoder with sampling off, every parameter explicit
    (`Decoding.greedy_search(eval.max_new_tokens)`); an image that cannot be read gets
    ("", None, reason). `on_batch(offset, answers)` is called after each batch.
    """
    from tqdm import tqdm

    from visualrft_lite.prompts import render_prompt
    from visualrft_lite.decoder import Decoding, decode, encode_inputs

    decoding = Decoding.greedy_search(cfg.eval.max_new_tokens)
    out: list[Answer] = []
    batch = cfg.eval.batch_size
    with tqdm(total=len(records), desc=desc, disable=quiet, unit="img") as bar:
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            prompts = [render_prompt(rec, template or cfg.data.prompt, coords=cfg.model.coords) for rec in chunk]
            enc = encode_inputs(model, processor, [rec.image for rec in chunk], prompts, device)
            done: list[Answer] = [
                ("", None, enc.failed.get(k)) for k in range(len(chunk))]
            if enc.batch is not None:
                answers = decode(model, processor, enc.batch, enc.features, decoding)
                for row, k in enumerate(enc.kept):
                    done[k] = (answers.texts[row], enc.batch.resized_sizes[row], None)
            out.extend(done)
            if on_batch is not None:
                on_batch(start, done)
            bar.update(len(chunk))
    return out
