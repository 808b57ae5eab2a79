"""`vrft-lite eval`: greedy answers on a held-out split, scored the way the paper reports them.

    generate   batched greedy completions (the rollout's decoder with sampling off), progress bar
    score      `score_completions(records, completions)`: pure, no model, so tests feed
               hand-made completions; every number goes through `rewards.score` /
               `rewards.parse_prediction`, so training and evaluation never disagree
    write      predictions.jsonl (completion, parsed answer, per-sample reward),
               metrics.json, and a table on stdout

Metrics per task (fractions in metrics.json; the table prints them x100 like the paper):
    classify   accuracy, per-class accuracy, confusion counts, format rate
    detect     COCO mAP (IoU .50:.95), AP50, AP75 and per-category AP from pycocotools
               COCOeval "bbox"; predictions are absolute [x, y, w, h] with score =
               confidence; mAP is the mean of per-category AP over the categories that have
               ground truth in the split (the paper's "mAP over the chosen categories")
    ground     mean IoU and the fraction of answers with IoU > 0.5
    count, choice  accuracy;   point  mean fraction of points inside the target box
The two-stage detection protocol (`eval.two_stage`) first asks whether the category is
present and asks for boxes only where the answer is yes; a "no" counts as no detections.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visualrft_lite.answers import extract_answer, normalize_label, parse_solution
from visualrft_lite.data.common import Skip
from visualrft_lite.data.records import Record
from visualrft_lite.data.skips import skipped_lines, unreadable, write_skipped
from visualrft_lite.errors import UserError
from visualrft_lite.rewards import BOX_TASKS, RewardOptions, box_iou, parse_prediction, score

NO_ANSWER = "(no answer)"
OTHER = "(other)"
"""Confusion columns for an unreadable answer and for a name that is no class of the split."""

HEADLINE = {"classify": "accuracy", "count": "accuracy", "choice": "accuracy",
            "detect": "mAP", "ground": "mIoU", "point": "point"}


@dataclass
class Evaluation:
    """What `score_completions` returns: the metrics and one row per record."""

    task: str
    metrics: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- parsing helpers


def parsed_json(task: str, parsed: Any) -> Any:
    """A parsed prediction as JSON: detect -> [{"box": [x1, y1, x2, y2], "confidence": c}], pixels."""
    if task == "detect":
        return [{"box": [round(v, 2) for v in box], "confidence": round(conf, 4)} for box, conf in parsed]
    if task == "ground":
        return None if parsed is None else [round(v, 2) for v in parsed]
    if task == "point":
        return [[round(x, 2), round(y, 2)] for x, y in parsed]
    return parsed


def parse_presence(completion: str) -> bool | None:
    """Stage one of the two-stage protocol: True for "yes", False for "no", None if neither.

    The answer block is read when there is one, else the whole completion: the gate only
    decides whether boxes are asked for, and an unformatted "Yes." must not drop a category.

    >>> parse_presence("<think>a red bus</think><answer>Yes</answer>"), parse_presence("No."), parse_presence("maybe")
    (True, False, None)
    """
    answer = extract_answer(completion)
    words = normalize_label(answer if answer is not None else completion).split()
    if not words:
        return None
    return True if words[0] == "yes" else False if words[0] == "no" else None


def _image_size(record: Record) -> tuple[int, int] | None:
    return tuple(record.image_size) if record.image_size is not None else None  # type: ignore[return-value]


# ----------------------------------------------------------------------------- scoring


def score_completions(
    records: Sequence[Record],
    completions: Sequence[str | None],
    *,
    options: RewardOptions | None = None,
    resized_sizes: Sequence[tuple[int, int] | None] | None = None,
) -> Evaluation:
    """Metrics and per-record rows for one task's records and their completions.

    A completion of None means the model was not asked (two-stage detection said "absent"):
    no detections, and it is left out of the format rate and the mean reward. Box tasks need
    each record's `image_size`; `resized_sizes` only for `coords: resized`.
    """
    if len(records) != len(completions):
        raise ValueError(f"{len(records)} records but {len(completions)} completions")
    if not records:
        raise UserError("no records to evaluate; check the data section (and --limit)")
    tasks = sorted({r.task for r in records})
    if len(tasks) != 1:
        raise ValueError(f"evaluate one task at a time; got {', '.join(tasks)}")
    task = tasks[0]
    options = options or RewardOptions()
    resized = list(resized_sizes) if resized_sizes is not None else [None] * len(records)

    rows: list[dict[str, Any]] = []
    for i, (rec, completion) in enumerate(zip(records, completions)):
        size = _image_size(rec)
        if task in BOX_TASKS and size is None:
            raise ValueError(f"record {i} ({rec.image_name}) has no image_size; box tasks need it")
        row: dict[str, Any] = {"index": i, "image": rec.image_name, "task": task}
        if rec.fields.get("category") is not None:
            row["category"] = rec.fields["category"]
        row["completion"] = completion
        if completion is None:
            parsed = [] if task in ("detect", "point") else None
            row["reward"] = None
        else:
            parsed = parse_prediction(task, completion, image_size=size, resized_size=resized[i], options=options)
            row["reward"] = score(task, completion, rec.solution, image_size=size, resized_size=resized[i],
                                  options=options)
        row["parsed"] = parsed_json(task, parsed)
        row["_parsed"] = parsed  # native form for the metric below; dropped before writing
        if rec.meta:
            row["meta"] = {k: v for k, v in rec.meta.items() if k != "crowd_boxes"}
        rows.append(row)

    asked = [r["reward"] for r in rows if r["reward"] is not None]
    metrics: dict[str, Any] = {
        "task": task,
        "n": len(records),
        "format_rate": _mean(s["format"] for s in asked),
        "mean_reward": _mean(s["total"] for s in asked),
    }
    metrics.update(_TASK_METRICS[task](records, rows))
    metrics["headline"] = HEADLINE[task]
    for row in rows:
        del row["_parsed"]
    return Evaluation(task=task, metrics=metrics, rows=rows)


def _mean(values: Any) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _accuracy_metrics(records: Sequence[Record], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """count / choice: the reward's accuracy component is the metric."""
    return {"accuracy": _mean(r["reward"]["accuracy"] if r["reward"] else 0.0 for r in rows)}


def _classify_metrics(records: Sequence[Record], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (the reward's), per-class accuracy and confusion counts keyed by normalised label."""
    truths = [parse_solution("classify", rec.solution) for rec in records]  # (label, *synonyms), normalised
    known = {name: names[0] for names in truths for name in names}  # any accepted name -> its class
    per_class: dict[str, list[float]] = defaultdict(list)
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for names, row in zip(truths, rows):
        correct = row["reward"]["accuracy"] if row["reward"] else 0.0
        per_class[names[0]].append(correct)
        said = row["_parsed"]
        if correct == 1.0:
            column = names[0]  # a synonym or a `contains` match counts as the class itself
        elif not said:
            column = NO_ANSWER
        else:
            column = known.get(said, OTHER)
        confusion[names[0]][column] += 1
    return {
        "accuracy": _mean(r["reward"]["accuracy"] if r["reward"] else 0.0 for r in rows),
        "per_class": {label: {"n": len(v), "accuracy": sum(v) / len(v)} for label, v in sorted(per_class.items())},
        "confusion": {label: dict(sorted(c.items())) for label, c in sorted(confusion.items())},
    }


def _ground_metrics(records: Sequence[Record], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Plain IoU of the parsed box (whatever reward.ground_metric trains with); no box = 0."""
    ious = []
    for rec, row in zip(records, rows):
        truth = parse_solution("ground", rec.solution, image_size=_image_size(rec))
        box = row["_parsed"]
        iou = box_iou(box, truth) if box is not None else 0.0
        row["iou"] = iou
        ious.append(iou)
    return {"mIoU": _mean(ious), "iou_above_0.5": _mean(1.0 if v > 0.5 else 0.0 for v in ious)}


def _point_metrics(records: Sequence[Record], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"point": _mean(r["reward"]["point"] if r["reward"] else 0.0 for r in rows)}


def _detect_metrics(records: Sequence[Record], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return coco_map(records, [row["_parsed"] for row in rows])


_TASK_METRICS = {"classify": _classify_metrics, "count": _accuracy_metrics, "choice": _accuracy_metrics,
                 "ground": _ground_metrics, "point": _point_metrics, "detect": _detect_metrics}


# ----------------------------------------------------------------------------- COCO mAP


def coco_inputs(
    records: Sequence[Record], detections: Sequence[Sequence[tuple[Sequence[float], float]]]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """(ground-truth COCO dict, COCO result list, category names in id order) for COCOeval.

    Each record is one (image, category) pair and becomes its own COCO image: COCOeval scores
    every (image, category) pair on its own, so this equals grouping records by image, and it
    also keeps LVIS' federated rule (a category is only scored on the images that list it).
    Crowd boxes (meta["crowd_boxes"]) are `iscrowd` ground truth: detections on them are ignored.
    """
    names: list[str] = []
    for rec in records:
        name = str(rec.fields.get("category", ""))
        if name not in names:
            names.append(name)
    cat_id = {name: k + 1 for k, name in enumerate(names)}
    images, annotations, results = [], [], []
    for image_id, (rec, dets) in enumerate(zip(records, detections), start=1):
        width, height = rec.image_size or (0, 0)
        images.append({"id": image_id, "width": width, "height": height})
        cid = cat_id[str(rec.fields.get("category", ""))]
        truth = parse_solution("detect", rec.solution, image_size=rec.image_size)
        crowd = rec.meta.get("crowd_boxes") or []
        for box, iscrowd in [*((b, 0) for b in truth), *((b, 1) for b in crowd)]:
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cid,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": iscrowd})
        for box, confidence in dets:
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": image_id, "category_id": cid, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(confidence)})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": cat_id[n], "name": n} for n in names]}
    return gt, results, names


def coco_map(
    records: Sequence[Record], detections: Sequence[Sequence[tuple[Sequence[float], float]]]
) -> dict[str, Any]:
    """mAP / AP50 / AP75 / per-category AP with pycocotools COCOeval ("bbox", maxDets 100).

    `detections` are pixel (box_xyxy, confidence) lists, one per record. A category without
    ground truth in the split has AP None and is left out of the mean.
    """
    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, results, names = coco_inputs(records, detections)
    n_gt = Counter(a["category_id"] for a in gt["annotations"] if not a["iscrowd"])
    per_category: dict[str, dict[str, Any]] = {}
    if results:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes adds keys to its input
            ev = COCOeval(coco_gt, coco_dt, "bbox")
            ev.params.catIds = [c["id"] for c in gt["categories"]]
            ev.evaluate()
            ev.accumulate()
        precision = ev.eval["precision"]  # [T iou thresholds, R recall points, K categories, A areas, M maxDets]
        thresholds = list(np.round(ev.params.iouThrs, 2))
        t50, t75 = thresholds.index(0.5), thresholds.index(0.75)

        def ap(p: Any) -> float | None:
            valid = p[p > -1]  # -1: the category has no ground truth
            return float(valid.mean()) if valid.size else None

        for k, name in enumerate(names):
            p = precision[:, :, k, 0, -1]  # area "all", maxDets 100
            per_category[name] = {"AP": ap(p), "AP50": ap(p[t50]), "AP75": ap(p[t75]), "n_gt": n_gt[k + 1]}
    else:  # no detections at all: pycocotools cannot load an empty result list
        for k, name in enumerate(names):
            value = 0.0 if n_gt[k + 1] else None
            per_category[name] = {"AP": value, "AP50": value, "AP75": value, "n_gt": n_gt[k + 1]}

    def mean_of(key: str) -> float | None:
        values = [c[key] for c in per_category.values() if c[key] is not None]
        return sum(values) / len(values) if values else None

    return {"mAP": mean_of("AP"), "AP50": mean_of("AP50"), "AP75": mean_of("AP75"),
            "per_category": per_category, "n_detections": len(results)}


# ----------------------------------------------------------------------------- the table


def _pct(value: float | None) -> str:
    return "   -" if value is None else f"{100 * value:6.1f}"


def metrics_table(metrics: dict[str, Any], title: str = "") -> str:
    """The metrics as a small text table, in percent like the paper's tables."""
    task = metrics["task"]
    head = f"{title}  " if title else ""
    lines = [f"{head}{task}, {metrics['n']} records (percent)", "-" * 44]

    def line(name: str, value: float | None) -> None:
        lines.append(f"{name:<30}{_pct(value)}")

    if task == "detect":
        line("mAP (IoU .50:.95)", metrics["mAP"])
        line("AP50", metrics["AP50"])
        line("AP75", metrics["AP75"])
        for name, c in metrics["per_category"].items():
            line(f"  AP {name} ({c['n_gt']} boxes)", c["AP"])
    elif task == "ground":
        line("mIoU", metrics["mIoU"])
        line("IoU > 0.5", metrics["iou_above_0.5"])
    elif task == "point":
        line("points inside the target", metrics["point"])
    else:
        line("accuracy", metrics["accuracy"])
        if task == "classify":
            worst = sorted(metrics["per_class"].items(), key=lambda kv: kv[1]["accuracy"])[:5]
            if len(metrics["per_class"]) > 1:
                for label, c in worst:
                    line(f"  {label[:20]} ({c['n']})", c["accuracy"])
                if len(metrics["per_class"]) > len(worst):
                    lines.append(f"  ({len(metrics['per_class']) - len(worst)} more classes in metrics.json)")
    line("format", metrics["format_rate"])
    if metrics.get("mean_reward") is not None:
        lines.append(f"{'mean reward (not percent)':<30}{metrics['mean_reward']:6.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command

_SUFFIX_SOURCE = {".json": "coco", ".jsonl": "jsonl", ".parquet": "hub"}
SOURCES = ("hub", "folder", "coco", "jsonl", "synthetic")


def data_overrides(spec: str) -> list[str]:
    """`--data SOURCE:PATH` (or a bare PATH whose kind is clear) -> `--set data.*` overrides.

    >>> data_overrides("coco:ann/instances_val2017.json")
    ['data.source=coco', 'data.path=ann/instances_val2017.json', 'data.eval_path=ann/instances_val2017.json']
    >>> data_overrides("synthetic")
    ['data.source=synthetic', 'data.eval_path=null']
    """
    source, sep, path = spec.partition(":")
    if not sep or source not in SOURCES:  # a bare path (Windows drive letters included)
        source, path = "", spec
        p = Path(spec).expanduser()
        if spec == "synthetic":
            source, path = "synthetic", ""
        elif p.is_dir():
            source = "folder"
        elif p.suffix in _SUFFIX_SOURCE:
            source = _SUFFIX_SOURCE[p.suffix]
        else:
            raise UserError(f"--data {spec}: say which kind it is as SOURCE:PATH, SOURCE one of {', '.join(SOURCES)} "
                            f"(e.g. --data coco:annotations/instances_val2017.json)")
    if source == "synthetic":
        return ["data.source=synthetic", *([f"data.path={path}"] if path else []), "data.eval_path=null"]
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
) -> tuple[Evaluation, Path]:
    """Evaluate the base model (or base + adapter) on the eval split; returns the result and --out."""
    from visualrft_lite.data.common import apply_limit
    from visualrft_lite.data.sources import load_records
    from visualrft_lite.generate import inference_config, load_for_inference
    from visualrft_lite.modeling.load import resolve_model
    from visualrft_lite.rundir import prepare_output_dir

    if preset is None and data is None and adapter is None:
        raise UserError("say what to evaluate on: --preset NAME, --data SOURCE:PATH, or --adapter DIR of a run")
    extra = [*(data_overrides(data) if data else []), *([f"data.task={task}"] if task else []), *overrides]
    cfg = inference_config(preset=preset, overrides=extra, adapter=adapter, model=model)
    limit = limit or cfg.eval.limit
    two_stage = cfg.eval.two_stage if two_stage is None else two_stage
    if two_stage and cfg.data.task != "detect":
        raise UserError(f"--two-stage is the detection protocol; data.task is {cfg.data.task}")
    resolve_model(cfg)  # everything cheap first: model (and its box convention), data, output folder
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
        f"{'; two-stage' if two_stage else ''}")
    loaded = load_for_inference(cfg.model, adapter, allow_mismatch=allow_mismatch)

    started = time.time()
    evaluation, late = evaluate_records(loaded.model, loaded.processor, loaded.device, cfg, records,
                                        two_stage=two_stage, quiet=quiet)
    skips = loaded_records.files + late  # left out of both sides of every metric
    for line in skipped_lines(skips):
        say(line)
    write_skipped(out / "skipped.jsonl", skips)
    evaluation.metrics.update({
        "model": cfg.model.name,
        "adapter": str(adapter) if adapter else None,
        "two_stage": two_stage,
        "skipped": dict(loaded_records.skipped) | ({"unreadable at eval": len(late)} if late else {}),
        "max_new_tokens": cfg.eval.max_new_tokens,
        "seconds": round(time.time() - started, 1),
    })
    write_outputs(evaluation, out)
    if not quiet:
        print(metrics_table(evaluation.metrics, title=cfg.name))
        print(f"wrote {out / 'metrics.json'} and {out / 'predictions.jsonl'}")
    return evaluation, out


def heldout_records(cfg: Any, n: int) -> list[Record]:
    """The records a run's `eval.heldout: n` table scores: what `vrft-lite eval --limit n` scores."""
    from visualrft_lite.data.common import apply_limit
    from visualrft_lite.data.sources import load_records

    return apply_limit(load_records(cfg.data, "eval").records, n, cfg.data.seed)


def write_outputs(evaluation: Evaluation, out: Path) -> None:
    with (out / "predictions.jsonl").open("w") as f:
        for row in evaluation.rows:
            f.write(json.dumps(row) + "\n")
    (out / "metrics.json").write_text(json.dumps(evaluation.metrics, indent=2) + "\n")


def evaluate_records(model: Any, processor: Any, device: Any, cfg: Any, records: Sequence[Record], *,
                     two_stage: bool = False, quiet: bool = True,
                     desc: str = "eval") -> tuple[Evaluation, list[Skip]]:
    """Greedy answers for `records`, scored: the one evaluator of `vrft-lite eval` and a run's held-out table.

    Records whose image cannot be read (or that the processor refuses) are left out of both
    sides of every metric and returned with their reason.
    """
    records, unusable = _with_sizes(list(records))
    if two_stage:
        presence = answer_records(model, processor, device, cfg, records, "presence", quiet=quiet,
                                  desc="stage 1 (present?)")
        unusable += [(records[i], err) for i, (_, _, err) in enumerate(presence) if err]
        kept = [i for i, (_, _, err) in enumerate(presence) if not err]
        records, presence = [records[i] for i in kept], [presence[i] for i in kept]
        asked = [i for i, (text, _, _) in enumerate(presence) if parse_presence(text) is not False]
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
    if two_stage:
        for row, (text, _, _) in zip(evaluation.rows, presence):
            row["presence_completion"] = text
            row["present"] = parse_presence(text)
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
                   template: str | None, *, quiet: bool,
                   desc: str) -> list[tuple[str, tuple[int, int] | None, str | None]]:
    """Greedy (completion, resized size, error) per record, eval.batch_size prompts decoded together.

    Decoding is the rollout's decoder with sampling off, every parameter explicit
    (`Decoding.greedy_search(eval.max_new_tokens)`); an image that cannot be read gets
    ("", None, reason).
    """
    from tqdm import tqdm

    from visualrft_lite.prompts import render_prompt
    from visualrft_lite.rollout import Decoding, decode, encode_inputs

    decoding = Decoding.greedy_search(cfg.eval.max_new_tokens)
    out: list[tuple[str, tuple[int, int] | None, str | None]] = []
    batch = cfg.eval.batch_size
    with tqdm(total=len(records), desc=desc, disable=quiet, unit="img") as bar:
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            prompts = [render_prompt(rec, template or cfg.data.prompt, coords=cfg.model.coords) for rec in chunk]
            enc = encode_inputs(model, processor, [rec.image for rec in chunk], prompts, device)
            done: list[tuple[str, tuple[int, int] | None, str | None]] = [
                ("", None, enc.failed.get(k)) for k in range(len(chunk))]
            if enc.batch is not None:
                answers = decode(model, processor, enc.batch, enc.features, decoding)
                for row, k in enumerate(enc.kept):
                    done[k] = (answers.texts[row], enc.batch.resized_sizes[row], None)
            out.extend(done)
            bar.update(len(chunk))
    return out
