"""The `vrft-lite` command: a thin click layer; each verb calls one package function.

A user's mistake raises `UserError` somewhere below; here it becomes a one-line
`click.ClickException` (exit 1), never a traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

import click

from visualrft_lite.errors import UserError


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn UserError (and a missing file) into a one-line click error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None

    return wrapper


preset_option = click.option("--preset", "-p", metavar="NAME|PATH",
                             help="A shipped preset (vrft-lite presets list) or a YAML file.")
set_option = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                          help="Override one config value; repeatable (e.g. --set train.steps=10).")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vrft-lite")
def main() -> None:
    """Visual-RFT on one GPU: GRPO with verifiable visual rewards for Qwen2-VL.

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
@user_errors
def presets_show(name: str, resolved: bool) -> None:
    """Print a preset's YAML (comments included), e.g. `vrft-lite presets show flowers-1shot`."""
    from visualrft_lite.config import load_config, resolve_preset

    if resolved:
        click.echo(load_config(name).to_yaml(), nl=False)
    else:
        click.echo(resolve_preset(name).read_text(), nl=False)


# ----------------------------------------------------------------------------- train


def run_config(preset: str | None, overrides: tuple[str, ...], resume: Path | None) -> Any:
    """A new run's config (--preset + --set), or a resumed run's own config.yaml."""
    from visualrft_lite.config import load_config
    from visualrft_lite.train import load_run_config

    if resume is not None:
        if preset:
            raise click.UsageError("--resume uses the run's own config.yaml; drop --preset")
        return load_run_config(resume, overrides)
    if not preset:
        raise click.UsageError("pass --preset NAME (see vrft-lite presets list) or --resume RUN_DIR")
    return load_config(preset, overrides)



@main.command()
@preset_option
@set_option
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<preset>-<time>).")
@click.option("--resume", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Continue a run from its last checkpoint (its config.yaml is used).")
@click.option("--force", is_flag=True, help="Overwrite a non-empty --out.")
@user_errors
def train(preset: str | None, overrides: tuple[str, ...], out: Path | None, resume: Path | None, force: bool) -> None:
    """Fine-tune with Visual-RFT (GRPO) and write a run directory.

    \b
    vrft-lite train --preset flowers-1shot
    vrft-lite train --preset demo --set train.steps=20 --out runs/try
    vrft-lite train --resume runs/try --set train.steps=40
    accelerate launch --num_processes 2 -m cli train --preset coco-8cat-4shot

    The run directory holds config.yaml, metrics.jsonl, samples.jsonl, checkpoints/ and
    final/ (a PEFT adapter). Ctrl-C saves a checkpoint and says how to resume.
    """
    from visualrft_lite.train import train as run_train

    run_train(run_config(preset, overrides, resume), out=out, resume=resume, force=force)


@main.command()
@preset_option
@set_option
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<preset>-<time>).")
@click.option("--resume", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Continue a run from its last checkpoint (its config.yaml is used).")
@click.option("--force", is_flag=True, help="Overwrite a non-empty --out.")
@user_errors
def sft(preset: str | None, overrides: tuple[str, ...], out: Path | None, resume: Path | None, force: bool) -> None:
    """Supervised fine-tuning on the same records: the paper's baseline.

    Trains the adapters on the answers (`<think>...</think><answer>...</answer>`) for
    train.steps steps at train.sft_learning_rate, with the same model loading, run
    directory, checkpoints and resume as `train`. For SFT followed by GRPO (Reason-RFT's
    recipe) set train.sft_warmup in a `train` run instead.

    \b
    vrft-lite sft --preset flowers-4shot --out runs/flowers4-sft
    vrft-lite eval --preset flowers-4shot --adapter runs/flowers4-sft/final
    """
    from visualrft_lite.train import train as run_train

    run_train(run_config(preset, overrides, resume), out=out, resume=resume, force=force, mode="sft")


# ----------------------------------------------------------------------------- plot


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), metavar="PNG",
              help="Where to write the figure (default RUN_DIR/curves.png).")
@user_errors
def plot(run_dir: Path, out: Path | None) -> None:
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



# ----------------------------------------------------------------------------- reward


@main.command()
@click.argument("file", type=click.File("r"))
@click.option("--coords", type=click.Choice(["rel1000", "pixel", "resized"]), default="rel1000", show_default=True,
              help="How the completion writes boxes: Qwen2-VL 0-1000 relative, or pixels.")
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
@user_errors
def reward(file: Any, coords: str, iou_threshold: float, iou_denominator: str, match: str,
           ground_metric: str, point_metric: str) -> None:
    """Score completions from a JSONL file (or - for stdin), one JSON line out per line in.

    \b
    echo '{"task": "classify", "completion": "<think>petals</think><answer>daisy</answer>", "solution": "daisy"}' \\
      | vrft-lite reward -
    {"format": 1.0, "accuracy": 1.0, "total": 2.0}

    Input lines: {"task", "completion", "solution", "image_size": [w, h]}. A malformed line
    is reported on stderr with its number and the rest go on.
    """
    from visualrft_lite.reward_tool import score_jsonl
    from visualrft_lite.rewards import RewardOptions

    try:
        options = RewardOptions(coords=coords, iou_threshold=iou_threshold, iou_denominator=iou_denominator,
                                match=match, ground_metric=ground_metric, point_metric=point_metric)
    except ValueError as e:
        raise UserError(str(e)) from None
    _, bad = score_jsonl(file, sys.stdout, sys.stderr, options)
    if bad:
        sys.exit(1)  # every good line was still scored


if __name__ == "__main__":
    main()
