"""Output folders never lose a user's file, a failed start never blocks its rerun, and a log cut
short by a crash is made whole again (`visualrft_lite.rundir`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visualrft_lite.errors import UserError
from visualrft_lite.rundir import MARKER, check_output_dir, prepare_output_dir, recognise, recover_jsonl

KINDS = ("run", "eval", "merge")


def tree(root: Path) -> dict[str, str]:
    """Every file under root with a hash of its bytes: 'nothing changed' is tree(before) == tree(after)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def earlier_run(out: Path, *, marker: bool = True, step: int = 3) -> Path:
    """What train leaves: config, logs, a checkpoint, final/."""
    if marker:
        prepare_output_dir(out, kind="run", force=False)
    else:
        out.mkdir(parents=True)
    (out / "config.yaml").write_text("name: demo\n")
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, step + 1)))
    (out / "checkpoints" / "step-000002").mkdir(parents=True)
    (out / "checkpoints" / "step-000002" / "trainer_state.pt").write_bytes(b"x")
    (out / "final").mkdir()
    (out / "final" / "adapter_config.json").write_text("{}")
    return out


def earlier_eval(out: Path) -> Path:
    out.mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    (out / "predictions.jsonl").write_text("{}\n")
    return out


def users_folder(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "notes.txt").write_text("precious")
    (out / "src").mkdir()
    (out / "src" / "main.py").write_text("print('mine')")
    return out


# ----------------------------------------------------------------------------- new and empty


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_folder_is_created_and_marked(tmp_path, kind):
    out = tmp_path / "a" / "b"
    assert prepare_output_dir(out, kind=kind, force=False) is None
    assert [p.name for p in out.iterdir()] == [MARKER] and recognise(out) == kind


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_or_marker_only_folder_is_used_without_force(tmp_path, kind):
    out = tmp_path / "o"
    out.mkdir()
    prepare_output_dir(out, kind=kind, force=False)
    prepare_output_dir(out, kind=kind, force=False)  # only our marker in it: still "empty"
    assert recognise(out) == kind


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("force", [False, True])
def test_out_naming_a_file_is_one_line_and_the_file_stays(tmp_path, kind, force):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    with pytest.raises(UserError, match="is a file; choose a directory") as info:
        prepare_output_dir(target, kind=kind, force=force)
    assert "\n" not in str(info.value) and target.read_text() == "mine"


def test_out_below_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(UserError, match="cannot create"):
        prepare_output_dir(tmp_path / "f" / "run", kind="run", force=False)


# ----------------------------------------------------------------------------- the user's files


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("force", [False, True])
def test_a_users_folder_is_refused_and_nothing_is_deleted(tmp_path, kind, force):
    out = users_folder(tmp_path / "project")
    before = tree(out)
    with pytest.raises(UserError) as info:
        prepare_output_dir(out, kind=kind, force=force)
    message = str(info.value)
    assert "\n" not in message and "choose another directory" in message
    if force:
        assert "did not write" in message and "notes.txt" in message
    else:
        assert "not empty" in message and "--force" not in message  # --force would not help here
    assert tree(out) == before


def test_force_on_the_current_folder_with_user_files_deletes_nothing(tmp_path, monkeypatch):
    # the reported data loss: `vrft-lite train --preset demo --out . --force` in a project folder
    users_folder(tmp_path)
    (tmp_path / "config.yaml").write_text("mine: true\n")  # even a config.yaml of the user's own
    before = tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="did not write"):
        prepare_output_dir(Path("."), kind="run", force=True)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", KINDS)
def test_force_refuses_an_earlier_output_holding_a_users_file(tmp_path, kind):
    out = tmp_path / "o"
    prepare_output_dir(out, kind=kind, force=False)
    own_file = {"run": "config.yaml", "eval": "metrics.json", "merge": "merge_info.json"}[kind]
    (out / own_file).write_text("{}")
    (out / "notes.txt").write_text("precious")
    before = tree(out)
    with pytest.raises(UserError, match="notes.txt.*never deletes"):
        prepare_output_dir(out, kind=kind, force=True)
    assert tree(out) == before


@given(names=st.lists(st.text("abcdefgh._-", min_size=1, max_size=12).filter(lambda n: n not in (".", "..")),
                      min_size=1, max_size=5, unique=True))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_force_deletes_nothing_whenever_any_entry_is_not_ours(tmp_path_factory, names):
    # an earlier run plus arbitrary extra names: either every extra is one of the run's own
    # names (then replacing is allowed) or nothing at all is deleted
    out = earlier_run(tmp_path_factory.mktemp("r") / "run")
    for name in names:
        if not (out / name).exists():
            (out / name).write_text("extra")
    before = tree(out)
    try:
        check_output_dir(out, kind="run", force=True).apply()
    except UserError:
        assert tree(out) == before
    else:
        assert [p.name for p in out.iterdir()] == [MARKER]


# ----------------------------------------------------------------------------- earlier outputs


@pytest.mark.parametrize("marker", [True, False], ids=["marked", "written-before-markers"])
def test_force_replaces_an_earlier_run(tmp_path, marker):
    out = earlier_run(tmp_path / "run", marker=marker)
    note = prepare_output_dir(out, kind="run", force=True)
    assert "replacing the earlier" in note
    assert [p.name for p in out.iterdir()] == [MARKER]


def test_an_earlier_run_without_force_says_how_to_resume_or_replace(tmp_path):
    out = earlier_run(tmp_path / "run")
    before = tree(out)
    with pytest.raises(UserError, match=r"holds an earlier run \(checkpoints up to step 2\); resume it with "
                                        r"--resume .*--force to replace it"):
        prepare_output_dir(out, kind="run", force=False)
    assert tree(out) == before


def test_force_replaces_an_earlier_eval_and_nothing_else(tmp_path):
    out = earlier_eval(tmp_path / "ev")
    prepare_output_dir(out, kind="eval", force=True)
    assert [p.name for p in out.iterdir()] == [MARKER]
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "metrics.json").write_text("{}")  # a metrics.json alone may be anybody's
    with pytest.raises(UserError, match="did not write"):
        prepare_output_dir(lone, kind="eval", force=True)


@pytest.mark.parametrize("existing, kind, what", [
    (earlier_eval, "run", "an eval's output"),
    (earlier_run, "eval", "a training run"),
    (earlier_run, "merge", "a training run"),
])
def test_force_never_replaces_another_kind_of_output(tmp_path, existing, kind, what):
    out = existing(tmp_path / "o")
    before = tree(out)
    with pytest.raises(UserError, match=f"holds {what}; --force only replaces"):
        prepare_output_dir(out, kind=kind, force=True)
    assert tree(out) == before


def test_an_out_that_would_delete_an_input_is_refused(tmp_path):
    out = earlier_run(tmp_path / "run")
    adapter = out / "final"
    with pytest.raises(UserError, match="would overwrite"):
        prepare_output_dir(out, kind="run", force=True, protected=[adapter])
    assert adapter.is_dir()


# ----------------------------------------------------------------------------- a failed start


@pytest.mark.parametrize("leftovers", [
    {"config.yaml": "name: demo\n"},                                      # died loading the model
    {"config.yaml": "name: demo\n", "metrics.jsonl": ""},                  # opened its log, no step
    {"config.yaml": "name: demo\n", "samples.jsonl": "", ".tmp-final": None},
    # records skipped while loading the data, a baseline held-out score, a tracker's folder
    {"config.yaml": "x\n", "skipped.jsonl": '{"reason": "unreadable"}\n', "heldout.jsonl": '{"stage": "base"}\n',
     "tensorboard": None},
])
def test_a_start_that_never_reached_step_1_is_reused_without_force(tmp_path, leftovers):
    out = tmp_path / "run"
    prepare_output_dir(out, kind="run", force=False)
    for name, text in leftovers.items():
        (out / name).mkdir() if text is None else (out / name).write_text(text)
    note = prepare_output_dir(out, kind="run", force=False)  # the same command again
    assert note is not None and "never reached step 1" in note
    assert [p.name for p in out.iterdir()] == [MARKER]


def test_a_start_that_logged_a_step_is_not_silently_replaced(tmp_path):
    out = tmp_path / "run"
    prepare_output_dir(out, kind="run", force=False)
    (out / "config.yaml").write_text("name: demo\n")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(UserError, match=r"no checkpoint yet\); choose another directory, or pass --force"):
        prepare_output_dir(out, kind="run", force=False)
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'


@pytest.mark.parametrize("step_file", ["checkpoints", "final", "sft_model"])
def test_a_start_with_a_checkpoint_or_adapter_is_not_a_failed_start(tmp_path, step_file):
    out = tmp_path / "run"
    prepare_output_dir(out, kind="run", force=False)
    (out / "config.yaml").write_text("name: demo\n")
    (out / step_file).mkdir()
    with pytest.raises(UserError, match="earlier run"):
        prepare_output_dir(out, kind="run", force=False)
    assert (out / step_file).is_dir()


def test_a_users_lone_config_yaml_is_not_taken_for_a_failed_start(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("mine: true\n")  # no marker: we did not write it
    for force in (False, True):
        with pytest.raises(UserError):
            prepare_output_dir(out, kind="run", force=force)
    assert (out / "config.yaml").read_text() == "mine: true\n"


# ----------------------------------------------------------------------------- JSONL recovery


def lines(*steps: int) -> bytes:
    return b"".join(json.dumps({"step": s, "reward": 0.5}).encode() + b"\n" for s in steps)


@pytest.mark.parametrize("content, keep_until, kept_steps, dropped, said", [
    # intact: untouched, nothing said
    (lines(1, 2, 3), None, [1, 2, 3], 0, None),
    # killed mid-write: the last line is cut short
    (lines(1, 2) + b'{"step": 3, "rew', None, [1, 2], 1, "1 damaged line"),
    # a full disk on ext4: the tail is NUL bytes
    (lines(1, 2) + b"\x00" * 40, None, [1, 2], 1, "1 damaged line"),
    # a cut-short line a later run appended to: the damage sits in the middle, the appended record survives
    (lines(1) + b'{"step": 2, "rew' + lines(2, 3), None, [1, 2, 3], 1, "1 damaged line"),
    # a cut inside a nested object: the inner object is not taken for a record
    (lines(1) + b'{"step": 2, "stats": {"kl": 0.1}\n' + lines(3), None, [1, 3], 1, "1 damaged line"),
    # ... and a damaged line with nothing whole after it goes
    (lines(1) + b'{"step": 2, "rew\n' + lines(3), None, [1, 3], 1, "1 damaged line"),
    # a resume from step 2 redoes steps 3 and 4
    (lines(1, 2, 3, 4), 2, [1, 2], 2, "2 lines after step 2"),
    # both at once
    (lines(1, 2, 3) + b'{"st', 1, [1], 3, "1 damaged line (a write cut short) and 2 lines after step 1"),
    # not one JSON object per line: a list, invalid UTF-8
    (lines(1) + b"[1, 2]\n" + b"\xff\xfe\n" + lines(2), None, [1, 2], 2, "2 damaged lines"),
    # the last line complete but for its newline: kept, the newline added, nothing to report
    (lines(1) + b'{"step": 2, "reward": 0.5}', None, [1, 2], 0, None),
])
def test_recover_jsonl(tmp_path, content, keep_until, kept_steps, dropped, said):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    messages: list[str] = []
    assert recover_jsonl(path, keep_until, echo=messages.append) == dropped
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == kept_steps
    assert path.read_bytes().endswith(b"\n")
    if said is None:
        assert messages == []
    else:
        assert len(messages) == 1 and said in messages[0] and str(path) in messages[0]


def test_recover_jsonl_leaves_an_intact_file_alone_and_a_missing_one_missing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert recover_jsonl(path, echo=None) == 0 and not path.exists()
    path.write_bytes(lines(1, 2))
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))
    assert recover_jsonl(path, echo=None) == 0
    assert path.stat().st_mtime_ns == stamp - 10**9  # not rewritten


@given(steps=st.integers(1, 12), cut=st.floats(0, 1))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_log_cut_anywhere_keeps_every_complete_line(tmp_path_factory, steps, cut):
    # a crash can stop a write at any byte: what stays is exactly the complete lines before it
    full = lines(*range(1, steps + 1))
    kept = full[: int(cut * len(full))]
    path = tmp_path_factory.mktemp("log") / "metrics.jsonl"
    path.write_bytes(kept)
    dropped = recover_jsonl(path, echo=None)
    complete = kept.count(b"\n")
    partial = kept[kept.rfind(b"\n") + 1:]
    survived = [json.loads(x)["step"] for x in path.read_text().splitlines()]
    # a cut that happens to end on a line's closing brace leaves a whole record: it is kept
    expect = list(range(1, complete + 1)) + ([complete + 1] if partial.endswith(b"}") else [])
    assert survived == expect
    assert dropped == (1 if partial and not partial.endswith(b"}") else 0)


# ----------------------------------------------------------------------------- a full disk


@pytest.mark.parametrize("code, needle", [
    (28, "free some space"),                 # ENOSPC: the disk filled up mid-run
    (13, "choose a folder you can write"),   # EACCES
    (30, "choose a folder you can write"),   # EROFS: a read-only mount
])
def test_a_full_or_read_only_disk_is_one_line_at_the_command(code, needle):
    import click

    import cli

    @cli.user_errors
    def verb():
        raise OSError(code, os.strerror(code), "runs/x/metrics.jsonl")

    with pytest.raises(click.ClickException) as info:
        verb()
    message = info.value.message
    assert "\n" not in message and needle in message and "runs/x/metrics.jsonl" in message


def test_other_os_errors_are_not_hidden():
    import cli

    @cli.user_errors
    def verb():
        raise OSError(5, "Input/output error")  # EIO: a real fault, keep its traceback

    with pytest.raises(OSError):
        verb()


def test_recover_run_logs_trims_every_log_to_the_checkpoint(tmp_path):
    from visualrft_lite.rundir import RunDir, recover_run_logs

    RUN_LOGS = RunDir.LOGS

    for name in RUN_LOGS:
        (tmp_path / name).write_bytes(lines(1, 2, 3) + b'{"step": 4, "re')
    (tmp_path / "skipped.jsonl").write_text('{"reason": "unreadable"}\n')  # no step: always kept
    said: list[str] = []
    assert recover_run_logs(tmp_path, 2, echo=said.append) == 2 * (len(RUN_LOGS) - 1)
    assert len(said) == len(RUN_LOGS) - 1
    assert [json.loads(x)["step"] for x in (tmp_path / "samples.jsonl").read_text().splitlines()] == [1, 2]
    assert (tmp_path / "skipped.jsonl").read_text() == '{"reason": "unreadable"}\n'
