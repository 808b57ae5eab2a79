"""The layering the README promises: only `modeling/` imports the model libraries."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "visualrft_lite"
MODEL_LIBRARIES = {"transformers", "peft", "bitsandbytes", "tokenizers"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_modeling_imports_model_libraries():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if "modeling" in path.relative_to(PACKAGE).parts:
            continue
        bad = imported_roots(path) & MODEL_LIBRARIES
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert offenders == {}


def test_the_check_sees_an_import(tmp_path):
    # the scanner itself must catch both import forms, or the test above proves nothing
    f = tmp_path / "m.py"
    f.write_text("import peft.tuners\nfrom transformers import AutoModel\nfrom . import local\n")
    assert imported_roots(f) == {"peft", "transformers"}


TASK_NAMES = {"classify", "detect", "ground", "count", "choice", "point"}


def task_names_in_code(path: Path) -> list[tuple[int, str]]:
    """(line, name) for every string constant in `path` that is a task's name (docstrings aside)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in TASK_NAMES
            and id(node) not in docstrings]


ALLOWED = {
    ("visualrft_lite/config/sections.py", "classify"),  # data.task's default value
    ("visualrft_lite/rewards.py", "point"),  # the `point` reward component's default weight
}


def test_only_tasks_and_dataset_readers_name_a_task():
    # a task is one unit: outside tasks/ (and the readers of datasets that are one task by
    # nature), no code branches on a task's name
    offenders = {}
    for path in [*PACKAGE.rglob("*.py"), PACKAGE.parent / "cli.py"]:
        parts = path.relative_to(PACKAGE.parent).parts
        if parts[:2] in (("visualrft_lite", "tasks"), ("visualrft_lite", "data")):
            continue
        where = str(path.relative_to(PACKAGE.parent))
        found = [(line, name) for line, name in task_names_in_code(path) if (where, name) not in ALLOWED]
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert offenders == {}


def test_the_task_name_check_sees_a_branch(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""classify docs."""\nif task == "detect":\n    pass\n')
    assert task_names_in_code(f) == [(2, "detect")]


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}
