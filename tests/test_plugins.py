"""Your own task or reward, without forking: `--plugin FILE.py` on every verb.

The README's example plugin (examples/yes_no_task.py) runs end to end on the tiny model: data
show, train, eval, predict --draw, reward and samples, the run's config.yaml bringing the plugin
back for the later verbs. A plugin that is missing, fails to import or registers a name twice
is a one-line error naming the file and line. Every test restores the registries it touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import assert_one_line_error, invoke

from visualrft_lite import plugins as plugins_module
from visualrft_lite.errors import UserError
from visualrft_lite.tasks import TASKS, get_task

ROOT = Path(__file__).resolve().parent.parent
YES_NO = ROOT / "examples" / "yes_no_task.py"
BREVITY = ROOT / "examples" / "brevity_reward.py"


@pytest.fixture(autouse=True)
def registries_restored():
    """What a plugin registers is process-wide: put the registries back as they were."""
    entries = dict(TASKS._entries)
    rewards = {name: list(e.value.rewards) for name, e in entries.items()}
    loaded = dict(plugins_module._LOADED)
    yield
    TASKS._entries.clear()
    TASKS._entries.update(entries)
    for name, e in entries.items():
        e.value.rewards[:] = rewards[name]
    plugins_module._LOADED.clear()
    plugins_module._LOADED.update(loaded)


def test_a_plugin_registers_a_task_once_however_often_it_is_named():
    assert "yesno" not in TASKS
    first = plugins_module.load_plugins([YES_NO])
    again = plugins_module.load_plugins([str(YES_NO), YES_NO])  # the same file: loaded once, no duplicate error
    assert first == again == (str(YES_NO.resolve()),)
    task = get_task("yesno")
    assert task.components == ("accuracy",)
    assert task.parse_truth(True) == "yes" and task.parse_truth("<answer>No.</answer>") == "no"


def test_a_plugin_adds_a_component_to_a_built_in_task():
    from visualrft_lite.rewards import score

    plugins_module.load_plugins([BREVITY])
    short = "<think>petals</think><answer>daisy</answer>"
    long = "<think>" + "petals " * 100 + "</think><answer>daisy</answer>"
    # 41 characters: brevity 1; 730 characters: 2 - 730/400 = 0.175
    assert score("classify", short, "daisy") == {"format": 1.0, "accuracy": 1.0, "brevity": 1.0, "total": 3.0}
    assert score("classify", long, "daisy")["brevity"] == pytest.approx(2 - len(long) / 400)


@pytest.mark.parametrize("body, needle", [
    (None, "not found"),  # a missing file
    ("x = 1\ny = (\n", ":2: SyntaxError"),  # a syntax error, with its line
    ("import os\nraise RuntimeError('broken on purpose')\n", ":2: RuntimeError: broken on purpose"),
    ("from visualrft_lite.tasks import Task, register_task\n\n\n@register_task\nclass Again(Task):\n"
     "    name = 'classify'\n    templates = {'again': '{query}'}\n", ":4: task 'classify' is already registered"),
    ("from visualrft_lite.tasks import task_reward\n\n\n@task_reward('classify', 'accuracy')\ndef twice(*a, **k):\n"
     "    return 0.0\n", ":4: reward component 'accuracy' of task 'classify' is already registered"),
])
def test_a_broken_plugin_is_one_line_naming_file_and_line(tmp_path, body, needle):
    plugin = tmp_path / "mine.py"
    if body is not None:
        plugin.write_text(body)
    with pytest.raises(UserError) as info:
        plugins_module.load_plugins([plugin])
    message = str(info.value)
    assert "\n" not in message and str(plugin.name) in message and needle in message, message
    assert_one_line_error(invoke("list", "tasks", "--plugin", plugin), "mine.py", needle)


def test_list_shows_what_a_plugin_registers():
    result = invoke("list", "tasks", "--plugin", YES_NO)
    assert result.exit_code == 0, result.output
    assert "yesno" in result.output and "Answer a yes/no question" in result.output


def questions(shapes_root: Path, out: Path, split: str, n: int) -> Path:
    """'Is there a circle in the image?' over the synthetic shapes (yes for circles)."""
    rows = []
    for folder in sorted((shapes_root / "classify" / split).iterdir()):
        for image in sorted(folder.glob("*.png"))[:n]:
            rows.append({"image": str(image), "task": "yesno", "query": "Is there a circle in the image?",
                         "solution": "yes" if folder.name == "circle" else "no"})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.mark.slow
def test_the_readme_plugin_end_to_end(tiny_model_dir, shapes_root, tmp_path):
    from test_train import tiny_overrides

    train_file = questions(shapes_root, tmp_path / "train.jsonl", "train", 2)
    test_file = questions(shapes_root, tmp_path / "test.jsonl", "test", 1)
    sets = tiny_overrides(tiny_model_dir, shapes_root, **{
        "data.source": "jsonl", "data.path": train_file, "data.eval_path": test_file, "data.task": "yesno",
        "train.steps": 2, "train.sft_warmup": 1})
    args = [x for s in sets for x in ("--set", s)]

    shown = invoke("data", "show", "--plugin", YES_NO, "--preset", "demo", *args, "--out", tmp_path / "sheet.png")
    assert shown.exit_code == 0, shown.output
    assert "train: 8 records" in shown.output and "Is there a circle in the image?" in shown.output
    assert (tmp_path / "sheet.png").is_file()

    trained = invoke("train", "--plugin", YES_NO, "--preset", "demo", *args, "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.output[-2000:]
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert str(YES_NO.resolve()) in config and "task: yesno" in config  # the run records its plugin

    # the later verbs take the plugin from the run's config.yaml: no --plugin needed
    TASKS.remove("yesno")
    plugins_module._LOADED.clear()
    evaluated = invoke("eval", "--adapter", tmp_path / "run" / "final", "--out", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output[-2000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "yesno" and metrics["headline"] == "accuracy" and metrics["n"] == 4

    image = next((shapes_root / "classify" / "test" / "circle").glob("*.png"))
    predicted = invoke("predict", image, "--task", "yesno", "--query", "Is there a circle?", "--adapter",
                       tmp_path / "run" / "final", "--draw", tmp_path / "drawn.png", "--json")
    assert predicted.exit_code == 0, predicted.output[-2000:]
    answer = json.loads(predicted.stdout.splitlines()[0])
    assert answer["task"] == "yesno" and "completion" in answer and (tmp_path / "drawn.png").is_file()
    assert_one_line_error(invoke("predict", image, "--task", "yesno", "--adapter", tmp_path / "run" / "final"),
                          "--task yesno needs --query")

    drawn = invoke("samples", tmp_path / "run", "--out", tmp_path / "pngs")
    assert drawn.exit_code == 0, drawn.output
    assert list((tmp_path / "pngs").glob("*.png"))

    line = json.dumps({"task": "yesno", "completion": "<think>round</think><answer>Yes</answer>", "solution": "yes"})
    scored = invoke("reward", "--plugin", YES_NO, "-", input_text=line)
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout) == {"format": 1.0, "accuracy": 1.0, "total": 2.0}


def test_the_readme_shows_the_example_file():
    readme = (ROOT / "README.md").read_text()
    code = YES_NO.read_text()
    body = code[code.index("from typing import Any"):].strip()
    assert f"```python\n{body}\n```" in readme  # the README's example is the file the tests run
