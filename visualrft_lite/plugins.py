"""`--plugin FILE.py`: your own tasks and reward components, without forking.

A plugin is a Python file that registers with the decorators the built-in tasks use:

    from visualrft_lite.tasks import Task, register_task, task_reward

    @register_task
    class YesNo(Task): ...                       # a new task

    @task_reward("classify", "brevity")          # or a component added to an existing task
    def brevity(answer, truth, *, completion, **_):
        return 1.0 if len(completion) < 400 else 0.0

Every verb takes `--plugin` (repeatable); a run records its plugins' absolute paths in its
config.yaml (`plugins:`), so resume, eval, predict, samples and merge load them again. A file is
loaded once per process however often it is named. A plugin that is missing, fails to import or
registers a name twice is a one-line error naming the file and line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from visualrft_lite.errors import UserError

_LOADED: dict[Path, str] = {}
"""Resolved plugin path -> the module name it was loaded under."""


def load_plugins(paths: Iterable[str | Path], *, relative_to: Path | None = None) -> tuple[str, ...]:
    """Import each plugin file once; returns their absolute paths (what config.yaml records).

    A relative path is taken from `relative_to` (the folder of the YAML naming it), else from
    the working directory.
    """
    loaded = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = (relative_to or Path.cwd()) / path
        path = path.resolve()
        if path not in _LOADED:
            _import(path, str(raw))
        loaded.append(str(path))
    return tuple(dict.fromkeys(loaded))


def _import(path: Path, given: str) -> None:
    if not path.is_file():
        raise UserError(f"plugin {given} not found ({path}); pass the path of a .py file")
    if path.suffix != ".py":
        raise UserError(f"plugin {given} is not a .py file")
    name = f"vrft_lite_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"plugin {given} cannot be imported (not a Python source file)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _LOADED[path] = name
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - whatever the file raises is the plugin's error, named with its line
        del sys.modules[name]
        del _LOADED[path]
        raise UserError(f"plugin {_where(e, path)}: {_reason(e)}") from None


def _where(error: BaseException, path: Path) -> str:
    """`file:line` of the innermost frame of the traceback that lies in the plugin file."""
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) and error.filename == str(path) else None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename).resolve() == path:
            line = frame.lineno
    return f"{path}:{line}" if line else str(path)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, UserError) else f"{type(error).__name__}: {text}"
