"""Resuming after a crash or a full disk: the newest intact checkpoint is used, damaged ones are
skipped with the reason, and a run with none is one line (`visualrft_lite.checkpoint`).

A stand-in model writes a real PEFT-shaped adapter (adapter_config.json + safetensors) so the
checks run in milliseconds; damage is done to the files themselves, in every way a disk does it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from visualrft_lite import checkpoint as ckpt
from visualrft_lite.errors import UserError


class StandInAdapter:
    """What save_checkpoint needs of a peft model: save_pretrained into a folder."""

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.tensors = {f"base_model.layers.{i}.lora_A.weight": torch.randn(64, 32, generator=g) for i in range(3)}

    def save_pretrained(self, folder: str, safe_serialization: bool = True) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base", "r": 4}))
        save_file(self.tensors, str(Path(folder) / "adapter_model.safetensors"))


def state(step: int) -> dict:
    return {"step": step, "updates": step, "optimizer": {"state": {0: {"exp_avg": torch.randn(512)}}},
            "rng": ckpt.rng_state(None)}


def make_run(tmp_path: Path, steps=(1, 2), manifest: bool = True) -> Path:
    run = tmp_path / "run"
    for step in steps:
        path = ckpt.save_checkpoint(run, step, StandInAdapter(step), state(step), keep=0)
        if not manifest:  # a checkpoint written before manifests existed
            (path / ckpt.MANIFEST).unlink()
    return run


def truncate_half(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def zero_bytes(f: Path) -> None:
    f.write_bytes(b"")


def delete(f: Path) -> None:
    f.unlink()


def zero_fill(f: Path) -> None:  # delayed allocation after a crash: right size, NULs inside
    f.write_bytes(b"\x00" * f.stat().st_size)


def flip_a_byte(f: Path) -> None:  # bit rot: only a recorded hash can see it
    data = bytearray(f.read_bytes())
    data[len(data) * 3 // 4] ^= 0xFF
    f.write_bytes(bytes(data))


def append_garbage(f: Path) -> None:
    f.write_bytes(f.read_bytes() + b"\x00garbage")


FILES = ["adapter_model.safetensors", "trainer_state.pt", "adapter_config.json"]


@pytest.mark.parametrize("damage", [truncate_half, zero_bytes, delete, zero_fill, flip_a_byte, append_garbage])
@pytest.mark.parametrize("name", FILES)
def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path, damage, name):
    run = make_run(tmp_path)
    damage(run / "checkpoints" / "step-000002" / name)
    said: list[str] = []
    assert ckpt.resume_checkpoint(run, echo=said.append).name == "step-000001"
    assert len(said) == 1 and "step-000002" in said[0] and name in said[0]
    assert ckpt.load_trainer_state(run / "checkpoints" / "step-000001")["step"] == 1


@pytest.mark.parametrize("damage", [truncate_half, zero_bytes, delete, zero_fill])
@pytest.mark.parametrize("name", FILES)
def test_checkpoints_without_a_manifest_are_checked_by_parsing(tmp_path, damage, name):
    # older checkpoints carry no sizes or hashes: a file cut short or blanked must still show
    run = make_run(tmp_path, manifest=False)
    damage(run / "checkpoints" / "step-000002" / name)
    said: list[str] = []
    assert ckpt.resume_checkpoint(run, echo=said.append).name == "step-000001"
    assert name in said[0]


def test_intact_checkpoints_without_a_manifest_pass_the_parse_check(tmp_path):
    run = make_run(tmp_path, manifest=False)  # the check must not reject good files
    assert ckpt.resume_checkpoint(run, echo=None).name == "step-000002"


def test_a_damaged_manifest_falls_back_to_parsing(tmp_path):
    run = make_run(tmp_path)
    newest = run / "checkpoints" / "step-000002"
    (newest / ckpt.MANIFEST).write_text("{not json")
    assert ckpt.resume_checkpoint(run, echo=None) == newest  # the files themselves are fine
    truncate_half(newest / "trainer_state.pt")
    assert ckpt.resume_checkpoint(run, echo=None).name == "step-000001"


def test_the_manifest_lists_every_file_with_its_size(tmp_path):
    run = make_run(tmp_path, steps=(1,))
    path = run / "checkpoints" / "step-000001"
    manifest = json.loads((path / ckpt.MANIFEST).read_text())
    files = {p.name for p in path.iterdir() if p.name != ckpt.MANIFEST}
    assert set(manifest) == files and {"trainer_state.pt", "adapter_model.safetensors"} <= files
    assert all(manifest[n]["bytes"] == (path / n).stat().st_size for n in files)


def test_every_checkpoint_damaged_is_one_line_naming_each(tmp_path):
    run = make_run(tmp_path)
    truncate_half(run / "checkpoints" / "step-000002" / "adapter_model.safetensors")
    zero_bytes(run / "checkpoints" / "step-000001" / "trainer_state.pt")
    with pytest.raises(UserError) as info:
        ckpt.resume_checkpoint(run, echo=None)
    message = str(info.value)
    assert "\n" not in message and "no usable checkpoint" in message
    assert "step-000002: adapter_model.safetensors" in message and "step-000001: trainer_state.pt" in message
    assert f"--out {run} --force" in message


@pytest.mark.parametrize("leftover", [None, ".tmp-step-000005"], ids=["nothing", "an-unfinished-save"])
def test_a_run_with_no_checkpoint_is_one_line(tmp_path, leftover):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    if leftover:
        (run / "checkpoints" / leftover).mkdir(parents=True)
    with pytest.raises(UserError, match="has no checkpoint to resume from") as info:
        ckpt.resume_checkpoint(run, echo=None)
    assert ("never finished" in str(info.value)) == bool(leftover)
    assert ("stopped before its first save" in str(info.value)) == (not leftover)


def test_an_unfinished_newer_save_is_not_a_candidate(tmp_path):
    run = make_run(tmp_path)
    (run / "checkpoints" / ".tmp-step-000003").mkdir()  # killed while saving step 3
    (run / "checkpoints" / "step-000004").mkdir()  # a step folder with nothing in it
    said: list[str] = []
    assert ckpt.resume_checkpoint(run, echo=said.append).name == "step-000002"
    assert said == [f"skipping {run / 'checkpoints' / 'step-000004'}: trainer_state.pt is missing"]


@pytest.mark.parametrize("damage", [truncate_half, zero_bytes, zero_fill])
def test_loading_a_damaged_trainer_state_directly_is_one_line(tmp_path, damage):
    run = make_run(tmp_path, steps=(1,))
    path = run / "checkpoints" / "step-000001"
    damage(path / "trainer_state.pt")
    with pytest.raises(UserError, match="trainer_state.pt") as info:
        ckpt.load_trainer_state(path)
    assert "\n" not in str(info.value)


def test_latest_checkpoint_also_passes_over_a_damaged_one(tmp_path):
    run = make_run(tmp_path)
    assert ckpt.latest_checkpoint(run).name == "step-000002"
    truncate_half(run / "checkpoints" / "step-000002" / "trainer_state.pt")
    assert ckpt.latest_checkpoint(run).name == "step-000001"
    zero_bytes(run / "checkpoints" / "step-000001" / "adapter_model.safetensors")
    assert ckpt.latest_checkpoint(run) is None
