"""Saves that a crash cannot tear: a folder appears whole or not at all, and what is there is readable."""

from __future__ import annotations

import os
import stat

import pytest

from visualrft_lite.atomic import staged, write_text


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_staged_folder_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "final"
    with staged(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with staged(target) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # the earlier version is gone, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no staging left behind


def test_a_failed_save_leaves_the_earlier_version(tmp_path):
    target = tmp_path / "final"
    with staged(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(RuntimeError), staged(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert [p.name for p in target.iterdir()] == ["a.txt"] and (target / "a.txt").read_text() == "one"
    assert not (tmp_path / ".tmp-final").exists()


def test_a_kill_mid_save_leaves_staging_that_the_next_save_clears(tmp_path):
    target = tmp_path / "step"
    with pytest.raises(KeyboardInterrupt), staged(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt  # a kill: nothing runs after it
    assert not target.exists() and (tmp_path / ".tmp-step" / "half.txt").is_file()
    with staged(target) as tmp:
        (tmp / "whole.txt").write_text("whole")
    assert [p.name for p in target.iterdir()] == ["whole.txt"] and not (tmp_path / ".tmp-step").exists()


def test_staging_inside_touches_nothing_outside_and_commits_after_the_hook(tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "old.bin").write_text("old")
    seen = []
    with staged(out, inside=True, before_commit=lambda: seen.append(sorted(p.name for p in out.iterdir()))) as tmp:
        assert tmp.parent == out
        (tmp / "new.bin").write_text("new")
    assert seen == [[".tmp-stage", "old.bin"]]  # the hook runs with the new files complete, not yet moved in
    assert sorted(p.name for p in out.iterdir()) == ["new.bin", "old.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_saved_files_are_readable_like_any_save(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "model"
        with staged(target) as tmp:
            path = tmp / "weights.bin"
            path.write_bytes(b"x")
            path.chmod(0o600)  # as a writer that makes private temporary files would leave it
        write_text(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(old)
    assert mode(target / "weights.bin") == 0o644 and mode(target) == 0o755
    assert mode(tmp_path / "config.yaml") == 0o644
