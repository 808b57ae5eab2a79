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


def test_a_read_only_home_is_one_line(tmp_path, monkeypatch):
    # root writes into read-only folders, so the folder refuses the way a read-only one does:
    # every directory or file made inside it fails with EACCES
    home = tmp_path / "ro"
    home.mkdir()
    real_mkdir, real_open = os.mkdir, os.open

    def refused(path) -> bool:
        return str(os.fspath(path)).startswith(str(home) + os.sep)

    def mkdir(path, *args, **kwargs):
        if refused(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if refused(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setenv("VRFT_LITE_HOME", str(home))
    with pytest.raises(UserError, match="Permission denied.*VRFT_LITE_HOME") as info:
        ensure_tiny_model()
    assert "\n" not in str(info.value) and not list(home.iterdir())  # nothing was written


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
