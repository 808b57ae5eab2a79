"""An unusable cache home ($VRFT_LITE_HOME or ~/.cache/vrft-lite) is one line naming VRFT_LITE_HOME."""

from __future__ import annotations

import os

import pytest
from helpers import assert_one_line_error, invoke

from visualrft_lite.errors import UserError
from visualrft_lite.modeling import tiny
from visualrft_lite.modeling.tiny import ensure_tiny_model


def _a_file(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a folder")
    return home


def _below_a_file(tmp_path):
    return _a_file(tmp_path) / "deeper"


@pytest.mark.parametrize("make_home", [_a_file, _below_a_file], ids=["home-is-a-file", "home-below-a-file"])
def test_a_home_that_is_not_a_folder_is_one_line(tmp_path, monkeypatch, make_home):
    monkeypatch.setenv("VRFT_LITE_HOME", str(make_home(tmp_path)))
    with pytest.raises(UserError, match="VRFT_LITE_HOME") as info:
        ensure_tiny_model()
    assert "\n" not in str(info.value) and "cannot write" in str(info.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_home_is_one_line(tmp_path, monkeypatch):
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    monkeypatch.setenv("VRFT_LITE_HOME", str(home))
    try:
        with pytest.raises(UserError, match="Permission denied.*VRFT_LITE_HOME"):
            ensure_tiny_model()
    finally:
        home.chmod(0o700)


def test_a_full_disk_while_building_is_one_line_and_leaves_no_partial_build(tmp_path, monkeypatch):
    # root can write anywhere, so simulate the write failing the way a full disk does
    def full(out, seed):
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiny, "_build_into", full)
    with pytest.raises(UserError, match="No space left on device; set VRFT_LITE_HOME"):
        ensure_tiny_model(tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []  # the temporary build is gone


def test_the_cli_shows_it_as_one_line(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    monkeypatch.setenv("VRFT_LITE_HOME", str(_a_file(tmp_path)))
    result = invoke("predict", tmp_path / "x.png", "--task", "classify", "--model", "tiny", "--set", "model.quant=none")
    assert_one_line_error(result, "VRFT_LITE_HOME")
