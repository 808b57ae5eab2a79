"""A preset section of the wrong type (`train: 5`, `model: [a]`) is a one-line error naming the
section and the file, with or without `--set` on that section; never a traceback."""

from __future__ import annotations

import pytest
from helpers import assert_one_line_error, invoke

from visualrft_lite.config import load_config
from visualrft_lite.errors import UserError

WRONG_SECTIONS = [
    "train: 5",           # a number where a mapping belongs
    "train: 0",           # falsy: used to pass silently as "all defaults"
    "model: [a]",         # a list
    "model: []",          # an empty list: falsy too
    "data: ''",           # an empty string
    "eval: true",         # a bool
    "reward: some text",  # a bare string
]


@pytest.mark.parametrize("yaml_text", WRONG_SECTIONS)
@pytest.mark.parametrize("overrides", [(), ("train.steps=3",), ("model.quant=none",)])
def test_a_wrong_typed_section_is_a_user_error_naming_it(tmp_path, yaml_text, overrides):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml_text + "\n")
    section = yaml_text.split(":")[0]
    with pytest.raises(UserError, match=rf"section '{section}'.*mapping of keys") as info:
        load_config(str(preset), overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("yaml_text", ["train:", "train: {}", "train: null"])
def test_an_empty_section_means_its_defaults(tmp_path, yaml_text):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml_text + "\n")
    assert load_config(str(preset), ["train.steps=3"]).train.steps == 3  # and --set still applies


@pytest.mark.parametrize("yaml_text, needle", [("name: [a, b]", "name in"), ("description: {x: 1}", "description in")])
def test_name_and_description_must_be_text(tmp_path, yaml_text, needle):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml_text + "\n")
    with pytest.raises(UserError, match=needle):
        load_config(str(preset))


def test_the_cli_prints_one_line(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("name: x\ntrain: 5\n")
    assert_one_line_error(invoke("presets", "show", "--resolved", preset), "section 'train'", "mapping of keys")
