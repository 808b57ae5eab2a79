"""Checkpoints that carry the real hub processor files, with tiny random weights.

`build_real_checkpoint("Qwen3-VL-2B-Instruct", out)` writes a loadable folder:

    processor files  the vendored hub files of tests/fixtures/hub/<folder>/, byte for byte
                     (chat template, tokenizer_config.json with the real added tokens,
                     preprocessor configs, generation_config.json where vendored)
    tokenizer.json   built here from the shared Qwen2 BPE (tests/fixtures/hub/qwen2-bpe/,
                     151,643 entries, 151,387 merges) plus the family's real added tokens,
                     with Qwen2's normaliser / pre-tokeniser / decoder, so it encodes as the
                     hub's tokenizer does
    weights          the family's real transformers class, real vocab_size and token ids,
                     tiny hidden sizes (the recipe of visualrft_lite/modeling/tiny_families.py)

Where a family's tokenizer_config.json is not vendored (Qwen2.5-VL), the tokenizer config is
written from the family's real added-token list below instead. The `real_checkpoint` fixture
builds each family once per test session.
"""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path
from typing import Any

import pytest

HUB = Path(__file__).parent / "fixtures" / "hub"
BPE = HUB / "qwen2-bpe"

# Qwen2's added tokens from 151643, in the hub's order; `special` as in added_tokens_decoder.
_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
            "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
_QWEN25_TEXT = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")

# Per vendored folder: the transformers classes, vocab_size (embedding rows) and the tiny
# shapes. vocab_size is the 2B/3B checkpoints' (151936: the tokenizer rounded up to a multiple
# of 128); the token ids come from the vendored tokenizer itself (see `_token_ids`).
FAMILIES: dict[str, dict[str, Any]] = {
    "Qwen2-VL-2B-Instruct": {"model_type": "qwen2_vl", "vocab_size": 151936, "patch": 14},
    "Qwen2.5-VL-3B-Instruct": {"model_type": "qwen2_5_vl", "vocab_size": 151936, "patch": 14,
                               "added_tokens": _SPECIAL + _QWEN25_TEXT},
    "Qwen3-VL-2B-Instruct": {"model_type": "qwen3_vl", "vocab_size": 151936, "patch": 16},
}

_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "hidden_act": "silu",
         "tie_word_embeddings": True}  # tied, as the 2B/3B checkpoints are: one 151936 x 64 table


def added_tokens(folder: str) -> list[tuple[int, str, bool]]:
    """(id, content, special) of the family's added tokens, from its vendored tokenizer_config.json."""
    path = HUB / folder / "tokenizer_config.json"
    if path.is_file():
        decoder = json.loads(path.read_text())["added_tokens_decoder"]
        return sorted((int(i), t["content"], bool(t["special"])) for i, t in decoder.items())
    return [(151643 + i, t, t in _SPECIAL) for i, t in enumerate(FAMILIES[folder]["added_tokens"])]


def write_qwen2_bpe(out: Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt of the shared Qwen2 BPE in `out`, byte-identical to the hub's."""
    paths = []
    for name in ("vocab.json", "merges.txt"):
        (out / name).write_bytes(lzma.decompress((BPE / f"{name}.xz").read_bytes()))
        paths.append(out / name)
    return paths[0], paths[1]


def build_tokenizer_json(folder: str, out: Path) -> Any:
    """A `tokenizers.Tokenizer` for the family: Qwen2's BPE pipeline plus its added tokens
    (the BPE files are written into `out` on the way, as the hub's checkpoints carry them)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE as BPEModel
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    vocab, merges = write_qwen2_bpe(out)
    tok = Tokenizer(BPEModel.from_file(str(vocab), str(merges), unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    for token_id, content, special in added_tokens(folder):
        token = AddedToken(content, special=special, normalized=False)
        (tok.add_special_tokens if special else tok.add_tokens)([token])
        if tok.token_to_id(content) != token_id:
            raise RuntimeError(f"{content} got id {tok.token_to_id(content)}, the hub's is {token_id}")
    return tok


def _token_ids(tok: Any) -> dict[str, int]:
    ids = {name: tok.token_to_id(t) for name, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    return ids


def _model_config(folder: str, tok: Any) -> Any:
    import transformers as tf

    spec = FAMILIES[folder]
    text = {**_TEXT, "vocab_size": spec["vocab_size"], "bos_token_id": tok.token_to_id("<|endoftext|>"),
            "eos_token_id": tok.token_to_id("<|im_end|>"), "pad_token_id": tok.token_to_id("<|endoftext|>")}
    ids = _token_ids(tok)
    if spec["model_type"] == "qwen2_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}
        vision = {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "hidden_size": 64,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
        return tf.Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    if spec["model_type"] == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 14,
                  "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 64, "window_size": 56,
                  "fullatt_block_indexes": [1], "hidden_act": "silu"}
        return tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    text["head_dim"] = 16
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [2, 3, 3],
                               "mrope_interleaved": True}
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 64,
              "num_position_embeddings": 64, "hidden_act": "gelu_pytorch_tanh", "deepstack_visual_indexes": [0, 1]}
    return tf.Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def build_real_checkpoint(family_folder: str, out_dir: str | Path, *, seed: int = 0) -> Path:
    """Write `out_dir`: the vendored processor files of `family_folder`, a tokenizer.json built
    from the real BPE and added tokens, and tiny random weights of the family's real class."""
    import torch
    from transformers import AutoModelForImageTextToText, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer_json(family_folder, out)
    vendored = HUB / family_folder
    if not (vendored / "tokenizer_config.json").is_file():
        # No hub tokenizer_config.json vendored: let transformers write one for these tokens.
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                       unk_token=None, bos_token=None, errors="replace",
                                       clean_up_tokenization_spaces=False, split_special_tokens=False,
                                       model_max_length=131072)
        fast.save_pretrained(out)
        config = json.loads((out / "tokenizer_config.json").read_text())
        config["tokenizer_class"] = "Qwen2Tokenizer"
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    tok.save(str(out / "tokenizer.json"))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(_model_config(family_folder, tok)).to(torch.float32).eval()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Writing model shards" bar for one small file is noise
    try:
        model.save_pretrained(out, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    for path in sorted(vendored.iterdir()):  # last, so the hub's bytes win over anything saved above
        if path.name != "config.json":  # the real config describes the real sizes, not these weights
            shutil.copyfile(path, out / path.name)
    return out


@pytest.fixture(scope="session")
def real_checkpoint(vrft_home: Path):
    """`real_checkpoint(folder) -> Path`: each family's checkpoint, built once per session."""
    built: dict[str, Path] = {}

    def get(folder: str) -> Path:
        if folder not in built:
            built[folder] = build_real_checkpoint(folder, vrft_home / "real-hub" / folder)
        return built[folder]

    return get
