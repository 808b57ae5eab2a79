"""Correct behaviour on the real hub processor files that today's code does not have yet.

Each test states what a checkpoint loaded or written by vrft-lite should look like; the
checkpoints are tests/real_hub.py's (real processor files, tiny random weights).
"""

from __future__ import annotations

import json
import stat

import pytest
from PIL import Image
from real_hub import real_checkpoint  # noqa: F401 - the fixture

from visualrft_lite.config import ModelConfig
from visualrft_lite.modeling import ops

QWEN3_VL = "Qwen3-VL-2B-Instruct"
# Qwen3-VL's preprocessor_config.json: size shortest_edge 65536 (256^2), longest_edge 16777216 (4096^2)
QWEN3_VL_SIZE = {"shortest_edge": 65536, "longest_edge": 16777216}


def _load(real_checkpoint, folder: str):
    from visualrft_lite.modeling.load import load_base

    return load_base(ModelConfig(name=str(real_checkpoint(folder)), quant="none", device="cpu"))


@pytest.mark.slow
def test_load_base_keeps_the_checkpoints_pixel_limits(real_checkpoint):
    # A run that sets no pixel limits should see images as the checkpoint's processor does.
    # Qwen3-VL's minimum 65536 upscales 112x112 to 256x256 (see test_real_processor's
    # test_qwen3_vl_checkpoint_processor_upscales_small_images): 16x16 patches -> 64 tokens.
    # Today load_processor writes model.min_pixels/max_pixels (Qwen2-VL's 3136/401408) over
    # every checkpoint's size, so the image stays 128x128: 8x8 patches -> 16 tokens.
    loaded = _load(real_checkpoint, QWEN3_VL)
    assert dict(loaded.processor.image_processor.size) == QWEN3_VL_SIZE
    enc = ops.encode_prompt(loaded.processor, Image.new("RGB", (112, 112)), "?")
    assert int((enc.input_ids == 151655).sum()) == 64


@pytest.mark.parametrize("value", ["off", "on"])
def test_thinking_can_be_set_from_yaml_and_set(tmp_path, value):
    # model.thinking takes auto | on | off, but YAML 1.1 reads a bare off / on as False / True,
    # and --set values go through the same reader, so neither spelling reaches the check as a
    # string: today both stop with "model.thinking must be one of auto, on, off; got False".
    from visualrft_lite.config import load_config

    preset = tmp_path / "p.yaml"
    preset.write_text(f"model:\n  thinking: {value}\n")
    assert load_config(str(preset)).model.thinking == value
    assert load_config(None, [f"model.thinking={value}"]).model.thinking == value


def _save_merged(real_checkpoint, folder: str, out):
    from visualrft_lite.modeling.merge import MergeResult, save_merged

    loaded = _load(real_checkpoint, folder)
    save_merged(MergeResult(loaded, 0.0, 0.0, 1.0), out, "fp32", {})
    return out


@pytest.mark.slow
def test_merged_folder_keeps_the_checkpoints_processor(real_checkpoint, tmp_path):
    # `vrft-lite merge` writes a plain checkpoint; loading its processor should give the
    # base's image limits. Today the merged folder's processor_config.json carries the run's
    # 3136/401408 (what load_processor put on the processor), so every later load of the merged
    # model sees smaller images than the base checkpoint did.
    from transformers import AutoProcessor

    out = _save_merged(real_checkpoint, QWEN3_VL, tmp_path / "merged")
    assert dict(AutoProcessor.from_pretrained(out).image_processor.size) == QWEN3_VL_SIZE


@pytest.mark.slow
def test_merged_folder_has_a_preprocessor_config(real_checkpoint, tmp_path):
    # The hub's Qwen3-VL checkpoints ship preprocessor_config.json (and
    # video_preprocessor_config.json), which serving engines and older transformers read.
    # Today the merged folder has only transformers 5's combined processor_config.json.
    out = _save_merged(real_checkpoint, QWEN3_VL, tmp_path / "merged")
    config = json.loads((out / "preprocessor_config.json").read_text())
    assert config["size"] == QWEN3_VL_SIZE


@pytest.mark.slow
def test_merged_weights_are_readable_by_others(real_checkpoint, tmp_path):
    # Every other file of the merged folder is 0644; model.safetensors comes out 0600, so a
    # server running as another user (or a shared model folder) cannot read the weights.
    out = _save_merged(real_checkpoint, QWEN3_VL, tmp_path / "merged")
    mode = stat.S_IMODE((out / "model.safetensors").stat().st_mode)
    assert mode & 0o044 == 0o044, oct(mode)
