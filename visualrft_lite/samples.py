"""`vrft-lite samples RUN`: draw a run's sampled completions on their images, one grid per group.

The training loop appends completions to RUN/samples.jsonl every train.samples_every steps,
one JSON object per completion:

    step          int, the optimizer step (1-based, as in metrics.jsonl)          required
    group         int, the prompt's index within the step (completions of one prompt share it)
    index         int, the completion's index within its group (tile order)
    task          a registered task (classify, detect, ...; a plugin's)                required
    image         path of the image file; a relative path is looked up in RUN, then in the
                  working directory                                                required to draw
    image_size    [width, height] of the original image (default: read from the file)
    resized_size  [width, height] after the processor's resize (needed with model.coords: resized)
    prompt        the prompt text (not drawn)
    solution      the ground truth, in any form `rewards.score` takes              required
    completion    the sampled text                                                 required
    reward        {component: value, ..., "total": value}
    advantage     float (optional; shown in the caption)

Lines without `group` (older runs) are grouped by (step, image, prompt). Predictions are read
with the task's own scorer and the run's config.yaml (model.coords, the reward options, its
plugins), so what is drawn is what the reward scored: the ground truth in green, the answer
in red, the reward in each tile's caption.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from visualrft_lite.config import read_yaml
from visualrft_lite.data.images import ImageLoadError, load_image
from visualrft_lite.draw import PREDICTION_COLOUR, TRUTH_COLOUR, caption, grid
from visualrft_lite.errors import UserError
from visualrft_lite.plugins import load_plugins
from visualrft_lite.plot import json_objects
from visualrft_lite.rewards import RewardOptions, Scorer
from visualrft_lite.rundir import RunDir

REQUIRED = ("step", "task", "solution", "completion")


def read_samples(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The usable lines of a samples.jsonl (an object with the REQUIRED keys and an integer
    step) and the number of lines skipped."""
    rows, skipped = [], 0
    for row in json_objects(path):
        if (row is None or any(k not in row for k in REQUIRED)
                or not isinstance(row["step"], int) or isinstance(row["step"], bool)):
            skipped += 1
            continue
        rows.append(row)
    return rows, skipped


def group_rows(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Rows by (step, group), in order of first appearance; each group's rows by `index`."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["step"], row["group"]) if "group" in row else (row["step"], row.get("image"), row.get("prompt"))
        groups.setdefault(key, []).append(row)
    for members in groups.values():
        members.sort(key=lambda r: r.get("index", 0) if isinstance(r.get("index"), int) else 0)
    return groups


def reward_options(run_dir: Path, plugins: Sequence[str] = ()) -> RewardOptions:
    """The run's reward options (coords included) from its config.yaml, its plugins loaded;
    defaults without one."""
    run = RunDir(run_dir)
    if not (run / RunDir.CONFIG).is_file():
        load_plugins(plugins)
        return RewardOptions()
    data = read_yaml(run / RunDir.CONFIG)
    load_plugins([*(data.get("plugins") or []), *plugins], relative_to=run.path)  # a missing plugin says so
    try:
        return run.read_config().reward
    except UserError:  # a config from another version: its coordinate convention is what matters
        coords = (data.get("model") or {}).get("coords", "rel1000")
        return RewardOptions(coords=coords if coords in ("rel1000", "pixel", "resized") else "rel1000")


def find_image(value: Any, run_dir: Path) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    path = Path(value)
    for candidate in ([path] if path.is_absolute() else [run_dir / path, path]):
        if candidate.is_file():
            return candidate
    return None


def _size(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    return None


def _fmt_reward(reward: Any) -> str:
    if not isinstance(reward, dict):
        return "reward ?"
    total = reward.get("total")
    parts = " ".join(f"{k} {v:.2f}" for k, v in reward.items() if k != "total" and isinstance(v, (int, float)))
    head = f"reward {total:.2f}" if isinstance(total, (int, float)) else "reward ?"
    return f"{head} ({parts})" if parts else head


def render_group(image: Image.Image, rows: list[dict[str, Any]], options: RewardOptions, *,
                 title: str = "", columns: int = 4) -> Image.Image:
    """One tile per completion (truth in green, its answer in red, reward below), as a grid."""
    first = rows[0]
    size = _size(first.get("image_size")) or (float(image.width), float(image.height))
    scorer = Scorer(first["task"], first["solution"], image_size=size, resized_size=_size(first.get("resized_size")),
                    options=options)
    task = scorer.task
    base = task.draw_truth(image, scorer.truth, colour=TRUTH_COLOUR)
    tiles = []
    for k, row in enumerate(rows):
        parsed = scorer.parse(str(row["completion"]))
        drawn = task.draw_answer(base, parsed, colour=PREDICTION_COLOUR, label="answer")
        number = row.get("index", k)
        lines = [f"#{number} {_fmt_reward(row.get('reward'))}", f"answer: {task.answer_text(parsed)}"]
        if isinstance(row.get("advantage"), (int, float)):
            lines[1] += f"  advantage {row['advantage']:+.2f}"
        tiles.append(caption(drawn, lines))
    head = f"{title}  truth: {task.truth_text(scorer.truth)}  (green: truth, red: answer)"
    return grid(tiles, columns=columns, title=head.strip())


def draw_samples(run_dir: Path, *, step: int | None = None, out: Path | None = None,
                 echo: Callable[[str], None] = print, plugins: Sequence[str] = ()) -> list[Path]:
    """Write one PNG per group of `step` (default: the last step in samples.jsonl) to `out`
    (default RUN/samples/) and return their paths; groups whose image is missing are skipped
    with a note."""
    run_dir = Path(run_dir)
    path = run_dir / RunDir.SAMPLES
    if not path.is_file():
        raise UserError(f"{run_dir} has no {RunDir.SAMPLES}; train writes it every train.samples_every steps")
    rows, skipped = read_samples(path)
    if not rows:
        raise UserError(f"{path} has no usable samples ({skipped} malformed line(s)); is the run writing it?")
    steps = sorted({r["step"] for r in rows})
    if step is None:
        step = steps[-1]
    elif step not in steps:
        shown = ", ".join(map(str, steps[-10:]))
        raise UserError(f"{path} has no samples of step {step}; steps with samples: {shown}")
    options = reward_options(run_dir, plugins)
    out = Path(out) if out is not None else run_dir / RunDir.SAMPLE_FIGURES
    out.mkdir(parents=True, exist_ok=True)
    if skipped:
        echo(f"note: skipped {skipped} malformed line(s) in {path}")

    written = []
    for n, members in enumerate(group_rows([r for r in rows if r["step"] == step]).values()):
        name = members[0]["group"] if "group" in members[0] else n
        image_path = find_image(members[0].get("image"), run_dir)
        if image_path is None:
            echo(f"note: skipped group {name} of step {step}: image {members[0].get('image')!r} not found")
            continue
        try:
            image = load_image(str(image_path))
        except ImageLoadError as e:
            echo(f"note: skipped group {name} of step {step}: {e}")
            continue
        try:
            figure = render_group(image, members, options, title=f"step {step} | group {name} | {members[0]['task']}")
        except ValueError as e:  # unreadable ground truth
            echo(f"note: skipped group {name} of step {step}: {e}")
            continue
        target = out / f"step{step}-group{name}.png"
        figure.save(target)
        written.append(target)
    if not written:
        raise UserError(f"no group of step {step} could be drawn (see the notes above)")
    return written
