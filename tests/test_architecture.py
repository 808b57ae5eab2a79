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
