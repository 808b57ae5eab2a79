"""The `vrft-lite` command: a thin click layer; each verb calls one package function.

A user's mistake raises `UserError` somewhere below; here it becomes a one-line
`click.ClickException` (exit 1), never a traceback.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import sys
from pathlib import Path
from typing import Any, Callable

import click

from visualrft_lite.errors import StopRequested, UserError
from visualrft_lite.modeling.families import FAMILIES

FAMILY_NAMES = FAMILIES.names()


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn UserError (and a full disk or a folder it may not write) into a one-line click error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise click.ClickException(str(e)) from None
        except StopRequested as e:
            click.echo(str(e), err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("stopped at once (second Ctrl-C); the last saved checkpoint, if any, is intact", err=True)
            sys.exit(130)
        except OSError as e:  # the machine's state, not a bug: say where and what to do
            if e.errno not in _DISK_FULL + _NOT_WRITABLE:
                raise
            where = f" writing {e.filename}" if e.filename else ""
            fix = "free some space" if e.errno in _DISK_FULL else "choose a folder you can write"
            raise click.ClickException(f"{e.strerror}{where}; {fix} (--out, or VRFT_LITE_HOME for caches)") from None

    return wrapper


preset_option = click.option("--preset", "-p", metavar="NAME|PATH",
                             help="A shipped preset (vrft-lite presets list) or a YAML file.")


def _load_plugins(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """Eager: plugins load before any other option is read, so their tasks are valid --task values."""
    if not value:
        return ()
    from visualrft_lite.plugins import load_plugins

    try:
        return load_plugins(value)
    except UserError as e:
        raise click.ClickException(str(e)) from None


plugin_option = click.option(
    "--plugin", "plugins", multiple=True, metavar="FILE.py", is_eager=True, callback=_load_plugins,
    help="A Python file registering your own tasks or reward components (see README, \"Your own task\"); "
         "repeatable; a run records it in its config.yaml.")


def task_help(what: str) -> str:
    from visualrft_lite.tasks import TASKS

    return f"{what}: {', '.join(TASKS.names())}, or one a --plugin registers (vrft-lite list tasks)."
allow_mismatch_option = click.option(
    "--allow-base-mismatch", is_flag=True,
    help="Load an adapter on a base it was not trained on (refused by default: its answers are noise).")
set_option = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                          help="Override one config value; repeatable (e.g. --set train.steps=10).")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vrft-lite")
def main() -> None:
    """Visual-RFT on one GPU: GRPO with verifiable visual rewards for Qwen vision-language models.

    \b
    vrft-lite presets list                      what runs are shipped
    vrft-lite train --preset flowers-1shot      fine-tune (4-bit base + LoRA)
    vrft-lite predict img.jpg --task detect --category bus --adapter runs/X/final
    vrft-lite eval --preset coco-8cat-2shot --adapter runs/X/final
    vrft-lite merge --adapter runs/X/final --out merged/
    """


# ----------------------------------------------------------------------------- presets


@main.group()
def presets() -> None:
    """List and show the shipped presets."""


@presets.command("list")
def presets_list() -> None:
    """Every shipped preset with its one-line description."""
    from visualrft_lite.config import preset_description, presets_dir, preset_names

    names = preset_names()
    width = max(len(n) for n in names) if names else 0
    for name in names:
        click.echo(f"{name:<{width}}  {preset_description(presets_dir() / f'{name}.yaml')}")


@presets.command("show")
@click.argument("name")
@click.option("--resolved", is_flag=True, help="Print the full config with every default filled in.")
@plugin_option
@user_errors
def presets_show(name: str, resolved: bool, plugins: tuple[str, ...]) -> None:
    """Print a preset's YAML (comments included), e.g. `vrft-lite presets show flowers-1shot`."""
    from visualrft_lite.config import load_config, resolve_preset

    if resolved:
        click.echo(load_config(name, plugins=plugins).to_yaml(), nl=False)
    else:
        click.echo(resolve_preset(name).read_text(), nl=False)


# ----------------------------------------------------------------------------- data


@main.group()
def data() -> None:
    """Look at a preset's data before training on it."""


@data.command("show")
@preset_option
@set_option
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False), metavar="SHEET.png",
              help="Write a contact sheet of records with their ground truth drawn.")
@click.option("--split", type=click.Choice(["train", "eval", "both"]), default="both", show_default=True,
              help="Which split to load and describe.")
@click.option("-n", "sheet_size", type=click.IntRange(1, 64), default=16, show_default=True,
              help="Records on the contact sheet (spread over the split).")
@plugin_option
@user_errors
def data_show(preset: str | None, overrides: tuple[str, ...], out: Path | None, split: str, sheet_size: int,
              plugins: tuple[str, ...]) -> None:
    """Load the records exactly as train (and eval) would and describe them.

    \b
    vrft-lite data show --preset flowers-1shot --set data.path=~/datasets
    vrft-lite data show --preset coco-8cat-2shot --set data.path=~/coco --out sheet.png

    Prints per split the record count, the classes or categories with counts, example
    prompts, the image tokens per image (the model's processor limits, no weights loaded)
    and the skipped files by reason; --out draws N records with their labels,
    boxes or points in original-image pixels (train records, else eval).
    """
    from visualrft_lite.config import load_config
    from visualrft_lite.data.show import show

    if not preset:
        raise click.UsageError("pass --preset NAME (see vrft-lite presets list)")
    from visualrft_lite.inference import budget_for

    splits = ("train", "eval") if split == "both" else (split,)
    cfg = load_config(preset, overrides, plugins=plugins)
    budget, why = budget_for(cfg)
    lines, _ = show(cfg, splits=splits, out=out, n=sheet_size, budget=budget or why)  # type: ignore[arg-type]
    click.echo("\n".join(lines))


# ----------------------------------------------------------------------------- train


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options `train` and `sft` share: what to run and where its run directory is."""
    for option in reversed([
        preset_option,
        set_option,
        click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<preset>-<time>)."),
        click.option("--resume", type=click.Path(path_type=Path, exists=True, file_okay=False),
                     help="Continue a run from its last checkpoint (its config.yaml is used)."),
        click.option("--force", is_flag=True, help="Overwrite a non-empty --out."),
        plugin_option,
    ]):
        fn = option(fn)
    return fn


def run_config(preset: str | None, overrides: tuple[str, ...], resume: Path | None, plugins: tuple[str, ...]) -> Any:
    """A new run's config (--preset + --set + --plugin), or a resumed run's own config.yaml."""
    from visualrft_lite.config import load_config
    from visualrft_lite.rundir import RunDir

    if resume is not None:
        if preset:
            raise click.UsageError("--resume uses the run's own config.yaml; drop --preset")
        return RunDir(resume).resume_config(overrides)
    if not preset:
        raise click.UsageError("pass --preset NAME (see vrft-lite presets list) or --resume RUN_DIR")
    return load_config(preset, overrides, plugins=plugins)



@main.command()
@run_options
@user_errors
def train(preset: str | None, overrides: tuple[str, ...], out: Path | None, resume: Path | None, force: bool,
          plugins: tuple[str, ...]) -> None:
    """Fine-tune with Visual-RFT (GRPO) and write a run directory.

    \b
    vrft-lite train --preset flowers-1shot
    vrft-lite train --preset demo --set train.steps=20 --out runs/try
    vrft-lite train --resume runs/try --set train.steps=40
    accelerate launch --num_processes 2 cli.py train --preset coco-8cat-4shot

    The run directory holds config.yaml, metrics.jsonl, samples.jsonl, checkpoints/ and
    final/ (a PEFT adapter). Ctrl-C saves a checkpoint and says how to resume.
    """
    from visualrft_lite.train import train as run_train

    run_train(run_config(preset, overrides, resume, plugins), out=out, resume=resume, force=force)


@main.command()
@run_options
@user_errors
def sft(preset: str | None, overrides: tuple[str, ...], out: Path | None, resume: Path | None, force: bool,
        plugins: tuple[str, ...]) -> None:
    """Supervised fine-tuning on the same records: the paper's baseline.

    Trains the adapters on the answers (`<think>...</think><answer>...</answer>`) for
    train.steps steps at train.sft_learning_rate, with the same model loading, run
    directory, checkpoints and resume as `train`. For SFT followed by GRPO (Reason-RFT's
    recipe) set train.sft_warmup in a `train` run instead.

    \b
    vrft-lite sft --preset flowers-4shot --out runs/flowers4-sft
    vrft-lite eval --preset flowers-4shot --adapter runs/flowers4-sft/final
    """
    from visualrft_lite.train import sft as run_sft

    run_sft(run_config(preset, overrides, resume, plugins), out=out, resume=resume, force=force)


# ----------------------------------------------------------------------------- predict


@main.command()
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@plugin_option
@click.option("--task", "-t", required=True, metavar="TASK", help=task_help("What to ask"))
@click.option("--category", "-c", metavar="NAME", help="detect: the category to find, e.g. bus.")
@click.option("--query", "-q", metavar="TEXT",
              help="ground / count / point / choice: the instruction or question.")
@click.option("--labels", metavar="A,B,C", help="classify: class names to list in the prompt (comma-separated).")
@click.option("--kind", metavar="NOUN", help="classify: what the image contains (plant, pet, car); default from the run.")
@click.option("--attribute", metavar="NOUN", help="classify: what to name (species, model); default from the run.")
@click.option("--field", "extra_fields", multiple=True, metavar="NAME=VALUE",
              help="Any other field the task's prompt names (a plugin task's, or choice's options=A,B,C); repeatable.")
@click.option("--model", "-m", metavar="ID|DIR",
              help="Base model: hub id or local directory (default: the adapter's base, else model.name).")
@click.option("--adapter", "-a", type=click.Path(path_type=Path, file_okay=False),
              help="A trained adapter: a run's final/ or checkpoints/step-N directory.")
@preset_option
@set_option
@click.option("--draw", type=click.Path(path_type=Path), metavar="OUT.png",
              help="Write the image with the answer drawn on it; several images: OUT-1.png, OUT-2.png, ... "
                   "in argument order; an existing directory: DIR/<image name>.png.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per image (pixel coordinates of the original image).")
@click.option("--sample/--greedy", default=False, show_default=True,
              help="Sample with the rollout settings (temperature, top_p, top_k) instead of greedy decoding; "
                   "either way eval.batch_size images decode together.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (--sample).")
@click.option("--max-new-tokens", type=click.IntRange(1), help="Answer length at most (default eval.max_new_tokens).")
@allow_mismatch_option
@user_errors
def predict(images: tuple[str, ...], plugins: tuple[str, ...], task: str, category: str | None, query: str | None,
            labels: str | None, kind: str | None, attribute: str | None, extra_fields: tuple[str, ...],
            model: str | None, adapter: Path | None, preset: str | None, overrides: tuple[str, ...],
            draw: Path | None, as_json: bool, sample: bool, seed: int, max_new_tokens: int | None,
            allow_base_mismatch: bool) -> None:
    """Answer a question about images with a model (and an adapter); print reasoning and answer.

    \b
    vrft-lite predict bus.jpg --task detect --category bus --adapter runs/coco/final --draw out.png
    vrft-lite predict a.jpg b.jpg --task classify --adapter runs/flowers/final --json
    vrft-lite predict desk.jpg --task ground --query "the cup nearest the laptop" --adapter runs/lisa/final
    vrft-lite predict cars.jpg --task count --query "How many cars are there?"
    vrft-lite predict x.png --task detect --category circle --model merged/ --set model.quant=none

    The prompt is the task's training prompt (with the run's classification nouns and
    data.prompt when the adapter sits in a run directory). Boxes and points are printed in
    pixels of the original image. Model settings (quantisation, device, coordinates) come
    from --preset, else the adapter's run, else the defaults; change them with --set. An
    unreadable image is reported and the others still run (exit status 1).
    """
    from visualrft_lite.predict import predict as run_predict

    given = {"category": category, "query": query, "kind": kind, "attribute": attribute, "labels": labels}
    results = run_predict(images, task, given, extra_fields=extra_fields, model=model, adapter=adapter,
                          preset=preset, overrides=overrides, draw=draw, as_json=as_json, sample=sample, seed=seed,
                          max_new_tokens=max_new_tokens, allow_mismatch=allow_base_mismatch, plugins=plugins)
    if any(r.error is not None for r in results):
        sys.exit(1)


# ----------------------------------------------------------------------------- eval


@main.command("eval")
@plugin_option
@preset_option
@click.option("--data", "-d", metavar="SOURCE:PATH",
              help="Evaluate on this data instead, from any data source train takes (vrft-lite list sources): "
                   "coco:instances_val.json, folder:DIR, jsonl:FILE, reasonseg:DIR, flowers102:DIR, hub:ID|FILE, "
                   "synthetic, ...")
@click.option("--task", "-t", metavar="TASK",
              help=task_help("The data's task (data.task), when --data does not imply it"))
@set_option
@click.option("--adapter", "-a", type=click.Path(path_type=Path, file_okay=False),
              help="A trained adapter (omit it for the base model's baseline row).")
@click.option("--model", "-m", metavar="ID|DIR", help="Base model (default: the adapter's base, else model.name).")
@click.option("--limit", "-n", type=click.IntRange(1), help="Evaluate a seeded subset of at most N records.")
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="Output directory (default runs/eval-<name>-<time>).")
@click.option("--force", is_flag=True,
              help="Overwrite a non-empty --out (an earlier eval), and ask the presence questions again.")
@click.option("--two-stage/--one-stage", default=None,
              help="Detection: ask whether the category is present first, boxes only where it is "
                   "(the paper's protocol, what the detection presets do), or boxes for every record "
                   "(default eval.two_stage).")
@allow_mismatch_option
@user_errors
def eval_(plugins: tuple[str, ...], preset: str | None, data: str | None, task: str | None,
          overrides: tuple[str, ...], adapter: Path | None, model: str | None, limit: int | None, out: Path | None,
          force: bool, two_stage: bool | None, allow_base_mismatch: bool) -> None:
    """Score greedy answers on a held-out split, the way the paper reports them.

    \b
    vrft-lite eval --preset coco-8cat-2shot                      # base model: the baseline row
    vrft-lite eval --preset coco-8cat-2shot --adapter runs/coco/final --two-stage
    vrft-lite eval --adapter runs/flowers/final --limit 500      # the run's own data and settings
    vrft-lite eval --data folder:data/pets/test --adapter runs/pets/final --set data.kind=pet

    Each task reports its own metrics (vrft-lite list tasks): classification accuracy with
    per-class accuracy and confusion counts, detection mAP / AP50 / per-category AP (COCO's
    with pycocotools; LVIS' federated AP with APr/APc/APf for LVIS data), grounding mean IoU,
    counting and choice accuracy, pointing the fraction inside the target. Writes
    predictions.jsonl (completion, parsed answer, per-sample reward) and metrics.json
    (fractions) to --out and prints a table (percent).

    The detection presets ask first whether the category is present (two-stage, the paper's
    protocol); the answers go to presence.jsonl, are scored (accuracy, precision, recall) and
    are reused by a later eval of the same model, adapter and images into a folder beside
    this one (--force asks again). For a preset of the paper, the paper's baseline / SFT /
    Visual-RFT figures for its setting are printed beside the measured one and kept in
    metrics.json under "paper".
    """
    from visualrft_lite.evaluate import run_eval

    run_eval(preset=preset, data=data, task=task, overrides=overrides, adapter=adapter, model=model,
             limit=limit, out=out, force=force, two_stage=two_stage, allow_mismatch=allow_base_mismatch,
             plugins=plugins)


# ----------------------------------------------------------------------------- compare


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="EVAL_OR_RUN...")
@click.option("--preset", "-p", metavar="NAME",
              help="The paper setting to compare with, for evaluations that do not record theirs (or to override it).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON (fractions, like metrics.json).")
@user_errors
def compare(paths: tuple[Path, ...], preset: str | None, as_json: bool) -> None:
    """Evaluations side by side, with the paper's rows for their setting beneath.

    \b
    vrft-lite compare runs/eval-coco-8cat-2shot-base-* runs/coco-sft/eval runs/coco-grpo/eval
    vrft-lite compare runs/lisa-grpo                    # a run: its newest eval, else its held-out rows
    vrft-lite compare runs/e1 runs/e2 --preset coco-8cat-4shot --json

    Each EVAL_OR_RUN is an eval's --out (or its metrics.json), one row, or a run directory:
    its newest eval (inside it, or beside it with an adapter from it), else the rows of its
    heldout.jsonl. Rows show the headline metric, per-category AP for detection, the presence
    stage's accuracy / precision / recall when two-stage, and the format rate, in percent;
    then the paper's baseline / SFT / Visual-RFT rows for the matching table, model and shots,
    which lays out the paper's Tables 2, 3 and 6 from your own evaluations.
    """
    from visualrft_lite.compare import compare as build, comparison_rows, comparison_table

    comparison = build(list(paths), preset=preset)
    if as_json:
        import json

        click.echo(json.dumps(comparison_rows(comparison), indent=2))
    else:
        click.echo(comparison_table(comparison))


# ----------------------------------------------------------------------------- merge


@main.command()
@click.option("--adapter", "-a", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The adapter: a run's final/ or checkpoints/step-N directory.")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="Directory for the merged model.")
@click.option("--base", "-b", metavar="ID|DIR", help="Base model (default: base_model_name_or_path in adapter_config.json).")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]), default="bf16", show_default=True,
              help="Weights of the merged model.")
@click.option("--from-quantized", is_flag=True,
              help="Merge into the NF4-dequantised base weights (what training saw) instead of the original ones.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N] for the merge.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out (an earlier merge).")
@click.option("--processor", type=click.Choice(["base", "run"]), default="base", show_default=True,
              help="The merged folder's processor files: the base checkpoint's as it shipped them, or the same "
                   "with the run's image pixel limits (model.min_pixels / max_pixels) baked in.")
@allow_mismatch_option
@plugin_option
@user_errors
def merge(adapter: Path, out: Path, base: str | None, dtype: str, from_quantized: bool, device: str,
          force: bool, processor: str, allow_base_mismatch: bool, plugins: tuple[str, ...]) -> None:
    """Fold a LoRA adapter into its base and save a plain transformers checkpoint.

    \b
    vrft-lite merge --adapter runs/coco/final --out merged/coco-2b
    vrft-lite merge --adapter runs/coco/final --out merged/coco-2b-nf4 --from-quantized --dtype fp16

    The result (safetensors, config, generation config, and the base's processor files as
    the hub shipped them: image processor, chat template, tokenizer) loads with
    AutoModelForImageTextToText.from_pretrained(OUT) and serving engines, no vrft-lite. The
    run's training-time pixel limits are printed and kept in merge_info.json; --processor
    run writes them into the merged processor instead of the base's.

    The merge is checked on a probe image: the maximum |merged - base+adapter| logit
    difference is printed, and above tolerance (1e-4 in fp32, looser in fp16/bf16) it is
    an error and nothing is written.

    \b
    The adapter was trained against NF4-rounded base weights. By default it is added to the
    original full-precision weights: the cleanest checkpoint, and usually what you want,
    but not exactly the function training optimised (re-run eval on the merged model to
    see the difference). --from-quantized adds it to the NF4-dequantised weights instead:
    exactly what training saw, but the merged model keeps the 4-bit rounding of every base
    weight at full size (and needs bitsandbytes).
    """
    from visualrft_lite.export import export_merged

    export_merged(adapter, out, base=base, dtype=dtype, from_quantized=from_quantized, force=force,  # type: ignore[arg-type]
                  device=device, allow_mismatch=allow_base_mismatch, processor=processor,  # type: ignore[arg-type]
                  echo=click.echo)


# ----------------------------------------------------------------------------- plot


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), metavar="PNG",
              help="Where to write the figure (default RUN_DIR/curves.png).")
@plugin_option
@user_errors
def plot(run_dir: Path, out: Path | None, plugins: tuple[str, ...]) -> None:
    """Draw a run's training curves from its metrics.jsonl into curves.png.

    \b
    vrft-lite plot runs/demo
    vrft-lite plot runs/demo --out demo.png

    Panels: reward (mean ± std) and its components, accuracy (IoU for detection) and format
    rate with held-out scores, KL, completion length, SFT loss; SFT and GRPO phases shaded.
    `train` and `sft` write the same figure when they finish; rerun this on a live run.
    """
    from visualrft_lite.plot import plot_run

    click.echo(plot_run(run_dir, out))


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False), metavar="RUN")
@click.option("--step", type=click.IntRange(1), metavar="N",
              help="The step whose samples to draw (default: the last step in samples.jsonl).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Directory for the PNGs (default RUN/samples/).")
@plugin_option
@user_errors
def samples(run_dir: Path, step: int | None, out: Path | None, plugins: tuple[str, ...]) -> None:
    """Draw a run's sampled completions on their images: one grid PNG per group.

    \b
    vrft-lite samples runs/coco
    vrft-lite samples runs/coco --step 40 --out figs/

    Reads RUN/samples.jsonl (written every train.samples_every steps). Each tile is one
    completion: the ground truth in green, its parsed answer (boxes, points or class, read
    as the reward reads it) in red, its reward in the caption. A group whose image file is
    missing is skipped with a note. Prints the paths written.
    """
    from visualrft_lite.samples import draw_samples

    for path in draw_samples(run_dir, step=step, out=out, echo=click.echo, plugins=plugins):
        click.echo(path)



# ----------------------------------------------------------------------------- list


LISTS = ("tasks", "sources", "families", "trackers", "optimizers", "losses", "aggregations")


@main.command("list")
@click.argument("what", type=click.Choice(LISTS), required=False)
@plugin_option
@user_errors
def list_(what: str | None, plugins: tuple[str, ...]) -> None:
    """What is registered: tasks, data sources, model families, trackers, optimizers, loss types,
    reward aggregations (all of them without WHAT), plugins' included.

    \b
    vrft-lite list tasks
    vrft-lite list tasks --plugin my_task.py
    """
    from visualrft_lite.registry import registries

    for name, registry in registries().items():
        if what is not None and name != what:
            continue
        click.echo(f"{name} ({registry.setting}):")
        width = max(len(e.name) for e in registry.entries())
        for entry in registry.entries():
            click.echo(f"  {entry.name:<{width}}  {entry.help}")


# ----------------------------------------------------------------------------- reward


def _reward_help() -> str:
    from visualrft_lite.reward_tool import reward_help

    return reward_help()


@main.command(help=_reward_help())
@click.argument("file", type=click.File("rb"))
@plugin_option
@click.option("--coords", type=click.Choice(["rel1000", "pixel", "resized"]), default="rel1000", show_default=True,
              help="How the completion writes boxes: 0-1000 relative (Qwen2-VL, Qwen3-VL, Qwen3.5), pixels of "
                   "the original image, or pixels of the resized image (Qwen2.5-VL); --family sets it too.")
@click.option("--iou-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Detection: IoU needed for a match.")
@click.option("--iou-denominator", type=click.Choice(["max", "pred"]), default="max", show_default=True,
              help="Detection IoU reward: divide by max(#gt, #pred) (rewards recall) or #pred (the paper).")
@click.option("--match", type=click.Choice(["exact", "contains"]), default="exact", show_default=True,
              help="Classification: the answer equals the label, or contains it as whole words.")
@click.option("--ground-metric", type=click.Choice(["iou", "giou"]), default="iou", show_default=True,
              help="Grounding reward: IoU, or (GIoU + 1) / 2.")
@click.option("--point-metric", type=click.Choice(["inside", "distance"]), default="inside", show_default=True,
              help="Pointing reward: fraction inside the box, or exp(-distance / sigma).")
@click.option("--family", type=click.Choice(FAMILY_NAMES),
              help="Score as this model family means it: its box convention (unless --coords is given) and, "
                   "for Qwen3.5, the <think> its chat template already opened.")
@click.option("--model", "-m", "model", metavar="ID|DIR",
              help="Score as this checkpoint's chat template writes the prompt (a template that opens <think> "
                   "puts it in front of each completion, as training does) and with its family's boxes.")
@click.option("--run", "run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), metavar="RUN",
              help="Score exactly as that training run did: its model, model.thinking and box convention "
                   "(its config.yaml).")
@user_errors
def reward(file: Any, plugins: tuple[str, ...], coords: str, iou_threshold: float, iou_denominator: str,
           match: str, ground_metric: str, point_metric: str, family: str | None, model: str | None,
           run_dir: Path | None) -> None:
    from visualrft_lite.reward_tool import family_reading, score_jsonl
    from visualrft_lite.rewards import RewardOptions

    if sum(x is not None for x in (family, model, run_dir)) > 1:
        raise click.UsageError("pass one of --family, --model and --run")
    ctx = click.get_current_context()
    given = {k: v for k, v in (("coords", coords), ("iou_threshold", iou_threshold),
                               ("iou_denominator", iou_denominator), ("match", match),
                               ("ground_metric", ground_metric), ("point_metric", point_metric))
             if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    if model is not None or run_dir is not None:
        from visualrft_lite.inference import template_reading

        base, prefix = template_reading(model=model, run=run_dir, plugins=plugins)  # the run's reward section
        options_kwargs = {**dataclasses.asdict(base), **given}
    else:
        coords, prefix = family_reading(family, given.get("coords") if family is not None else coords)
        options_kwargs = dict(coords=coords, iou_threshold=iou_threshold, iou_denominator=iou_denominator,
                              match=match, ground_metric=ground_metric, point_metric=point_metric)
    try:
        options = RewardOptions(**options_kwargs)
    except ValueError as e:
        raise UserError(str(e)) from None
    _, bad = score_jsonl(file, sys.stdout, sys.stderr, options, prefix=prefix)
    if bad:
        sys.exit(1)  # every good line was still scored


if __name__ == "__main__":
    main()
