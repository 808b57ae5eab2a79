"""Inference plumbing shared by `predict`, `eval` and `merge`: which config, which model, answers.

    inference_config   --preset, else the run's config.yaml next to --adapter, else defaults;
                       the base is --model, else the adapter's own base, else model.name
    load_for_inference the base (as configured: 4-bit by default) plus the adapter, eval mode
    generate_batch     several prompts in one left-padded `generate` call, greedy, with every
                       decoding parameter explicit (the checkpoint's generation_config.json,
                       near-greedy sampling for Qwen2-VL, never leaks in); `sample=True` uses
                       the rollout sampler of training instead, one prompt at a time
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from visualrft_lite.config import Config, ModelConfig, RolloutConfig, apply_overrides, config_from_dict, load_config, read_yaml
from visualrft_lite.errors import UserError
from visualrft_lite.modeling import ops


@dataclass
class Answer:
    """One generated completion and the size the processor resized its image to."""

    text: str
    resized_size: tuple[int, int]  # (width, height)


# ----------------------------------------------------------------------------- config


def run_config_path(adapter: Path) -> Path | None:
    """config.yaml of the run an adapter came from: runs/X/final or runs/X/checkpoints/step-N."""
    for folder in (adapter.parent, adapter.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


def adapter_base(adapter: Path) -> str | None:
    from visualrft_lite.modeling.load import adapter_base_name

    return adapter_base_name(adapter)


def inference_config(
    *,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    adapter: Path | None = None,
    model: str | None = None,
) -> Config:
    """The config predict/eval/merge run with (see the module docstring for the order)."""
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter} holds no adapter (adapter_config.json missing); "
                        f"pass a run's final/ or checkpoints/step-N directory")
    run_cfg = run_config_path(adapter) if adapter is not None and preset is None else None
    if run_cfg is not None:
        cfg = config_from_dict(apply_overrides(read_yaml(run_cfg), list(overrides)), str(run_cfg))
    else:
        cfg = load_config(preset, list(overrides))
    if model is not None:
        name = model
    elif any(o.strip().startswith("model.name=") for o in overrides):
        name = cfg.model.name
    else:
        name = (adapter_base(adapter) if adapter is not None else None) or cfg.model.name
    cfg.model = dataclasses.replace(cfg.model, name=name)
    return cfg


def model_config_for(adapter: Path, *, model: str | None, overrides: Sequence[str] = ()) -> ModelConfig:
    """The model section for an adapter: its run's settings (pixels, coords), its base."""
    return inference_config(overrides=overrides, adapter=adapter, model=model).model


# ----------------------------------------------------------------------------- model


def load_for_inference(cfg: ModelConfig, adapter: Path | None) -> Any:
    """`modeling.load.Loaded` with the adapter attached (not merged), in eval mode."""
    from visualrft_lite.modeling import load as mload

    loaded = mload.load_base(cfg)
    if adapter is not None:
        mload.load_adapter(loaded, adapter, trainable=False)
    loaded.model.eval()
    return loaded


# ----------------------------------------------------------------------------- generation


@torch.no_grad()
def generate_batch(
    model: Any,
    processor: Any,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    device: torch.device,
    *,
    max_new_tokens: int,
    sample: bool = False,
    rollout: RolloutConfig | None = None,
    generator: torch.Generator | None = None,
) -> list[Answer]:
    """Completions for (image, prompt) pairs: one batched greedy `generate`, or the training sampler."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    if not images:
        return []
    if sample:
        return [_sample_one(model, processor, im, p, device, max_new_tokens, rollout or RolloutConfig(), generator)
                for im, p in zip(images, prompts)]
    eos_ids, suppress_ids, pad_id = ops.special_token_ids(processor)
    tokenizer = processor.tokenizer
    # embedding rows past the tokenizer (padding to a round size) decode to nothing: never pick them
    suppress_ids = suppress_ids + list(range(len(tokenizer), ops.lm_head(model)[0].shape[0]))
    texts = [ops.chat_text(processor, p) for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generated tokens must follow each prompt directly
    try:
        enc = processor(text=texts, images=list(images), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    enc = {k: v.to(device) for k, v in enc.items()}
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            min_new_tokens=0,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            length_penalty=1.0,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
            suppress_tokens=suppress_ids or None,
            use_cache=True,
        )  # [B, L + T]
    finally:
        model.train(was_training)
    new = out[:, enc["input_ids"].shape[1]:]  # [B, T]
    eos = torch.tensor(eos_ids, device=new.device)
    answers = []
    patch = processor.image_processor.patch_size
    for row, grid in zip(new, enc["image_grid_thw"]):
        stop = torch.isin(row, eos).nonzero()
        keep = row[: int(stop[0]) + 1] if len(stop) else row  # up to and including the first EOS
        text = tokenizer.decode(keep, skip_special_tokens=True)
        _, h, w = (int(v) for v in grid)
        answers.append(Answer(text=text, resized_size=(w * patch, h * patch)))
    return answers


def _sample_one(model: Any, processor: Any, image: Image.Image, prompt_text: str, device: torch.device,
                max_new_tokens: int, rollout: RolloutConfig, generator: torch.Generator | None) -> Answer:
    from visualrft_lite.rollout import sample_group

    prompt = ops.encode_prompt(model, processor, image, prompt_text, device)
    embeds = ops.image_embeds(model, prompt)
    group = sample_group(model, processor, prompt, embeds, rollout, num=1, greedy=False,
                         max_new_tokens=max_new_tokens, generator=generator)
    return Answer(text=group.texts[0], resized_size=prompt.resized_size)
