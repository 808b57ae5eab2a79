"""Config files: the shipped presets, YAML reading, `--set` overrides, and parsing a mapping
into a `Config` (`config_from_dict`).

A preset is a YAML file whose top-level keys are `name`, `description`, `plugins` and the
sections. Unknown keys are errors naming the key, the section and the file; values are checked
against their field's type here and against their choices and ranges where each section is
built. `--set section.key=value` overrides are parsed as YAML scalars and go through the same
checks. Plugins (`plugins:` or `--plugin`) load before any section is built, so their tasks
are valid choices. Pure: imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from visualrft_lite.config.sections import SECTIONS, Config
from visualrft_lite.errors import UserError, did_you_mean

TOP_LEVEL = ("name", "description", "plugins")

# ----------------------------------------------------------------------------- presets


def presets_dir() -> Path:
    """The shipped presets: inside the installed package, or `presets/` of a checkout."""
    packaged = Path(str(resources.files("visualrft_lite"))) / "presets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def resolve_preset(name_or_path: str) -> Path:
    """A preset name (`flowers-1shot`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"preset file {name_or_path} not found")
        return path
    candidate = presets_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    hint = did_you_mean(name_or_path, preset_names(), n=3)
    raise UserError(f"preset {name_or_path!r} not found{hint} (vrft-lite presets list)")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"malformed YAML in {where}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise UserError(f"malformed YAML in {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a preset is a mapping of sections (model:, data:, ...), not {type(data).__name__}")
    return data


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a YAML value against a dataclass field's type hint (ints widen to floats)."""
    origin = get_origin(hint)
    args = get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(args):  # YAML 1.1 reads a bare on / off as a bool
            return "on" if value else "off"
        return value  # checked where the section is built, against the Literal's choices
    if origin in (list,):
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value] if args else value
    if origin in (dict,):
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {value!r}")
        return value
    if args and type(None) in args:  # X | None
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        return _coerce(value, rest[0], where) if len(rest) == 1 else value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def _build_section(cls: type, values: dict[str, Any], section: str, source: str) -> Any:
    if not isinstance(values, dict):
        example = dataclasses.fields(cls)[0].name
        raise UserError(f"section {section!r} in {source} must be a mapping of keys "
                        f"(e.g. {section}: {{{example}: ...}}), got {type(values).__name__} {values!r:.60}")
    hints = get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            hint = did_you_mean(key, known, otherwise=f" (known: {', '.join(known)})")
            raise UserError(f"unknown key {key!r} in section {section!r} of {source}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key} in {source}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise UserError(f"{source}: {e}") from None


def config_from_dict(data: dict[str, Any], source: str = "<config>", *, plugins: Sequence[str] = (),
                     relative_to: Path | None = None) -> Config:
    """Map a preset's mapping onto the typed sections; unknown keys are errors.

    The mapping's `plugins:` (relative to `relative_to`, the YAML's folder) and `plugins` (from
    the command line) are loaded first; the Config records all of them as absolute paths.
    """
    from visualrft_lite.plugins import load_plugins

    unknown = [k for k in data if k not in SECTIONS and k not in TOP_LEVEL]
    if unknown:
        hint = did_you_mean(unknown[0], [*SECTIONS, *TOP_LEVEL], otherwise=f" (sections: {', '.join(SECTIONS)})")
        raise UserError(f"unknown section {unknown[0]!r} in {source}{hint}")
    listed = _coerce(data.get("plugins") or [], list[str], f"plugins in {source}")
    loaded = (*load_plugins(listed, relative_to=relative_to), *load_plugins(plugins))
    # A missing or empty section (`train:`) means its defaults; any other non-mapping is an error.
    raw = {name: {} if data.get(name) is None else data[name] for name in SECTIONS}
    model = _build_section(SECTIONS["model"], raw["model"], "model", source)
    if isinstance(raw["reward"], dict):  # the box convention is the model's: reward.coords follows model.coords
        written = raw["reward"].get("coords")
        if written is not None and written != model.coords:
            raise UserError(f"{source}: reward.coords={written} disagrees with model.coords={model.coords}; "
                            f"set model.coords only")
        raw["reward"] = {**raw["reward"], "coords": model.coords}
    sections = {name: model if name == "model" else _build_section(cls, raw[name], name, source)
                for name, cls in SECTIONS.items()}
    name = _coerce(data.get("name") if data.get("name") is not None else "custom", str, f"name in {source}")
    description = _coerce(data.get("description") or "", str, f"description in {source}")
    try:
        return Config(name=name, description=description, plugins=tuple(dict.fromkeys(loaded)), **sections)
    except ValueError as e:
        raise UserError(f"{source}: {e}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (value parsed as a YAML scalar/list) to a preset mapping."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise UserError(f"--set expects section.key=value, got {item!r} (e.g. --set train.steps=10)")
        section, _, name = key.strip().partition(".")
        if section not in SECTIONS:
            hint = did_you_mean(section, SECTIONS, otherwise=f" (sections: {', '.join(SECTIONS)})")
            raise UserError(f"--set {item}: unknown section {section!r}{hint}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        data.setdefault(section, {})
        if data[section] is None:
            data[section] = {}
        if not isinstance(data[section], dict):
            raise UserError(f"--set {item}: section {section!r} of the preset is {type(data[section]).__name__} "
                            f"{data[section]!r:.60}, not a mapping of keys; fix that section first")
        data[section][name] = value
    return data


def load_config(preset: str | None = None, overrides: Sequence[str] = (), *, plugins: Sequence[str] = ()) -> Config:
    """A preset (name or path; None = all defaults) plus `--set` overrides and `--plugin` files."""
    folder = None
    if preset is None:
        data, source = {}, "<defaults>"
    else:
        path = resolve_preset(preset)
        data, source, folder = read_yaml(path), str(path), path.parent
    if overrides:
        data = apply_overrides(data, list(overrides))
        source = f"{source} (with --set)"
    return config_from_dict(data, source, plugins=plugins, relative_to=folder)


def preset_description(path: Path) -> str:
    try:
        data = read_yaml(path)
    except UserError:
        return "(malformed)"
    return str(data.get("description", ""))
