"""Tiny random checkpoints of every supported family, built locally like the tiny Qwen2-VL.

Each is the family's real transformers class with its real processor class, saved like a hub
checkpoint, so `model.name=DIR` goes through exactly the loading code a hub model does:

    qwen2_5_vl    Qwen2_5_VLForConditionalGeneration + Qwen2_5_VLProcessor (patch 14, windowed
                  vision attention with one full-attention block), Qwen2.5-VL's template
                  (the same as Qwen2-VL's: default system prompt).
    qwen3_vl      Qwen3VLForConditionalGeneration + Qwen3VLProcessor (patch 16, DeepStack
                  features from two vision layers, interleaved M-RoPE), Qwen3-VL-Instruct's
                  template conventions (no default system prompt, plain generation prompt).
    qwen3_5       Qwen3_5ForConditionalGeneration + Qwen3VLProcessor: hybrid layers (three
                  Gated-DeltaNet linear-attention layers, then one full-attention layer), partial
                  rotary; its template's generation prompt opens the think block
                  (`<|im_start|>assistant\\n<think>\\n`), or closes an empty one with
                  `enable_thinking=False`.
    qwen3_vl_moe, qwen3_5_moe   the MoE variants (fused experts), for the load-time checks.

The templates are reduced to what a single-image user turn needs (no tools, no video); the
tokenizer is the tiny Qwen2-VL's (same ids for every special token). Text: hidden 64, 2 or 4
layers; vision: depth 2, hidden 32. Each family builds once into its own cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from visualrft_lite.modeling import tiny

BUILDER_VERSION = 1  # bump on any change to what the builder writes
FAMILY_ALIASES = {
    "vrft-lite/tiny-qwen2.5-vl": "qwen2_5_vl",
    "vrft-lite/tiny-qwen3-vl": "qwen3_vl",
    "vrft-lite/tiny-qwen3.5": "qwen3_5",
}
TINY_FAMILIES = ("qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_vl_moe", "qwen3_5_moe")

_USER_TURN = (
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
)
# Qwen3-VL-Instruct: no default system prompt; the assistant turn starts plainly.
QWEN3_VL_TEMPLATE = (
    "{% for message in messages %}" + _USER_TURN + "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3.5: thinking by default, so the generation prompt opens <think>; enable_thinking=False
# closes an empty block instead (Qwen3's convention).
QWEN3_5_TEMPLATE = (
    "{% for message in messages %}" + _USER_TURN + "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)

_TEXT = {"vocab_size": tiny.TINY_VOCAB_SIZE, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
         "hidden_act": "silu", "tie_word_embeddings": False}
_IDS = {"image_token_id": tiny.SPECIAL_TOKEN_IDS["<|image_pad|>"], "video_token_id": tiny.SPECIAL_TOKEN_IDS["<|video_pad|>"],
        "vision_start_token_id": tiny.SPECIAL_TOKEN_IDS["<|vision_start|>"],
        "vision_end_token_id": tiny.SPECIAL_TOKEN_IDS["<|vision_end|>"]}
_TOKENS = {"bos_token_id": tiny.SPECIAL_TOKEN_IDS["<|endoftext|>"], "eos_token_id": tiny.SPECIAL_TOKEN_IDS["<|im_end|>"],
           "pad_token_id": tiny.SPECIAL_TOKEN_IDS["<|endoftext|>"]}
_QWEN3_VISION = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
                 "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 64,
                 "num_position_embeddings": 64, "hidden_act": "gelu_pytorch_tanh"}
_HYBRID = {"layer_types": ["linear_attention"] * 3 + ["full_attention"], "num_hidden_layers": 4, "head_dim": 32,
           "linear_conv_kernel_dim": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
           "linear_num_key_heads": 2, "linear_num_value_heads": 4,
           # rotary on a quarter of head_dim 32 = 8 dims -> mrope sections sum to 4
           "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                               "mrope_section": [2, 1, 1], "mrope_interleaved": True}}
_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}


def family_config(family: str) -> Any:
    """The tiny config of `family` (no weights)."""
    import transformers as tf

    if family == "qwen2_5_vl":
        text = {**_TEXT, **_TOKENS, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                                        "mrope_section": [2, 3, 3]}}
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 14,
                  "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 64, "window_size": 56,
                  "fullatt_block_indexes": [1], "hidden_act": "silu"}
        return tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **_IDS)
    if family in ("qwen3_vl", "qwen3_vl_moe"):
        text = {**_TEXT, **_TOKENS, "head_dim": 16, "rope_parameters": {
            "rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}}
        vision = {**_QWEN3_VISION, "deepstack_visual_indexes": [0, 1]}
        if family == "qwen3_vl_moe":
            return tf.Qwen3VLMoeConfig(text_config={**text, **_MOE, "decoder_sparse_step": 1}, vision_config=vision,
                                       tie_word_embeddings=False, **_IDS)
        return tf.Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **_IDS)
    if family in ("qwen3_5", "qwen3_5_moe"):
        text = {**_TEXT, **_TOKENS, **_HYBRID}
        if family == "qwen3_5_moe":
            return tf.Qwen3_5MoeConfig(text_config={**text, **_MOE, "shared_expert_intermediate_size": 32},
                                       vision_config=_QWEN3_VISION, tie_word_embeddings=False, **_IDS)
        return tf.Qwen3_5Config(text_config=text, vision_config=_QWEN3_VISION, tie_word_embeddings=False, **_IDS)
    raise ValueError(f"no tiny builder for {family!r}; choose one of {', '.join(TINY_FAMILIES)}")


def random_family_model(family: str, seed: int) -> Any:
    """`family`'s tiny model with random weights from `seed` (global RNG untouched), fp32, eval."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(family_config(family)).to(torch.float32).eval()
        torch.nn.init.normal_(model.lm_head.weight, std=tiny.LM_HEAD_STD)  # see tiny.LM_HEAD_STD
    return model


def family_processor(family: str) -> Any:
    """The family's real processor class around the shared tiny tokenizer."""
    import transformers as tf

    ip = tiny.IMAGE_PROCESSOR
    if family == "qwen2_5_vl":
        common = dict(patch_size=14, temporal_patch_size=2, merge_size=2, image_mean=ip["image_mean"],
                      image_std=ip["image_std"], min_pixels=ip["min_pixels"], max_pixels=ip["max_pixels"])
        return tf.Qwen2_5_VLProcessor(image_processor=tf.Qwen2VLImageProcessor(**common),
                                      tokenizer=tiny.build_tokenizer(),
                                      video_processor=tf.Qwen2VLVideoProcessor(**common),
                                      chat_template=tiny.CHAT_TEMPLATE)
    # Qwen3-VL and Qwen3.5: patch 16 (32 pixels per image token), mean/std 0.5
    size = {"shortest_edge": ip["min_pixels"], "longest_edge": ip["max_pixels"]}
    common = dict(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                  size=size)
    thinking = family.startswith("qwen3_5")
    tok_cls = tf.Qwen3_5Tokenizer if thinking else None
    return tf.Qwen3VLProcessor(image_processor=tf.Qwen2VLImageProcessor(**common),
                               tokenizer=tiny.build_tokenizer(cls=tok_cls),
                               video_processor=tf.Qwen3VLVideoProcessor(**common),
                               chat_template=QWEN3_5_TEMPLATE if thinking else QWEN3_VL_TEMPLATE)


def build_tag(family: str, seed: int) -> str:
    spec = json.dumps({"v": BUILDER_VERSION, "tiny": tiny.build_tag(seed), "family": family,
                       "config": family_config(family).to_json_string(use_diff=False),
                       "templates": [QWEN3_VL_TEMPLATE, QWEN3_5_TEMPLATE]}, sort_keys=True)
    return f"tiny-{family.replace('_', '-')}-v{BUILDER_VERSION}-seed{seed}-{hashlib.sha256(spec.encode()).hexdigest()[:10]}"


def ensure_tiny_family(family: str, cache_dir: str | Path | None = None, *, seed: int = 0) -> Path:
    """`family`'s tiny checkpoint folder, built on first use (seconds on CPU) and reused after."""
    if family == "qwen2_vl":
        return tiny.ensure_tiny_model(cache_dir, seed=seed)
    root = Path(cache_dir).expanduser() if cache_dir is not None else tiny.default_cache_dir()
    target = root / build_tag(family, seed)
    if (target / tiny.BUILD_MARKER).is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        print(f"building the tiny local {family} model in {target} (once, a few seconds) ...", file=sys.stderr)
        tmp = root / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _write(family, tmp, seed)
            try:
                os.rename(tmp, target)
            except OSError:
                if not (target / tiny.BUILD_MARKER).is_file():  # not another process's complete build
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise tiny.cache_home_error(root, e) from None
    return target


def _write(family: str, out: Path, seed: int) -> None:
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    family_processor(family).save_pretrained(out)
    model = random_family_model(family, seed)
    ids = tiny.SPECIAL_TOKEN_IDS
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], **tiny.NEAR_GREEDY,
    )
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    n_params = sum(p.numel() for p in model.parameters())
    (out / tiny.BUILD_MARKER).write_text(json.dumps(
        {"id": f"vrft-lite/tiny-{family}", "builder_version": BUILDER_VERSION, "seed": seed,
         "parameters": n_params}, indent=1) + "\n")
    for path in out.iterdir():
        path.chmod(0o644)
