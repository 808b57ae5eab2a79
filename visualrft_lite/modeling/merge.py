"""The model-library half of `vrft-lite merge`: fold LoRA into the base, check it, save it.

    base (bf16/fp16/fp32) + adapter  --probe logits-->  reference
    merge_and_unload                 --probe logits-->  merged; max |merged - reference|

With `from_quantized` the base is loaded in NF4 first (exactly what training saw), the
reference is taken on it, then every `Linear4bit` is replaced by an `nn.Linear` holding its
dequantised weight and the adapter is merged into that. The checks, messages and file
layout live in `visualrft_lite/export.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, ImageDraw

from visualrft_lite.atomic import finish
from visualrft_lite.config import ModelConfig
from visualrft_lite.modeling import load as mload
from visualrft_lite.modeling import ops
from visualrft_lite.rundir import MERGE_INFO

PROBE_PROMPT = "Describe the objects in this image and where they are."

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class MergeResult:
    """The merged model (plain transformers class) and what the probe measured."""

    loaded: mload.Loaded
    max_abs_diff: float
    """max |merged logits - base+adapter logits| on the probe input."""
    adapter_effect: float
    """max |base+adapter logits - base logits|: how much the adapter changes the probe at all."""
    logit_scale: float
    """max |base+adapter logits|, for reading the two numbers above."""
    dequantized_layers: int = 0


def probe_image(size: int = 224) -> Image.Image:
    """A fixed, non-uniform test picture (gradient + shapes) so image tokens carry signal."""
    image = Image.new("RGB", (size, size))
    pixels = image.load()
    for y in range(size):
        for x in range(size):
            pixels[x, y] = (x * 255 // size, y * 255 // size, (x + y) * 127 // size)
    draw = ImageDraw.Draw(image)
    draw.rectangle([size // 8, size // 6, size // 2, size // 2], fill=(220, 30, 30))
    draw.ellipse([size // 2, size // 2, size - size // 10, size - size // 8], fill=(30, 200, 60))
    return image


@torch.no_grad()
def probe_logits(model: Any, processor: Any, device: torch.device) -> torch.Tensor:
    """Logits [L, V] in fp32 of one forward over the probe image + prompt (chat template)."""
    text = ops.chat_text(processor, PROBE_PROMPT)
    enc = processor(text=[text], images=[probe_image()], return_tensors="pt")
    enc = {k: v.to(device) for k, v in enc.items()}
    was_training = model.training
    model.eval()
    try:
        return model(**enc, use_cache=False).logits[0].float()
    finally:
        model.train(was_training)


def dequantize_linear4bit(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Replace each bitsandbytes Linear4bit by an nn.Linear with its NF4-dequantised weight (in place).

    Returns how many layers were replaced. The quantisation markers on the model and its
    config go too, so `save_pretrained` writes a plain checkpoint.
    """
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, bnb.nn.Linear4bit):
                continue
            weight = dequantize_4bit(child.weight.data, child.weight.quant_state)  # [out, in]
            linear = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                     device=weight.device, dtype=dtype)
            linear.weight.data = weight.to(dtype).reshape(child.out_features, child.in_features)
            if child.bias is not None:
                linear.bias.data = child.bias.data.to(dtype)
            linear.requires_grad_(False)
            setattr(parent, name, linear)
            replaced += 1
    _forget_quantization(model)
    return replaced


def _forget_quantization(model: Any) -> None:
    config = model.config
    for key in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, key):
            delattr(config, key)
    for key, value in (("hf_quantizer", None), ("is_quantized", False), ("is_loaded_in_4bit", False),
                       ("is_loaded_in_8bit", False), ("quantization_method", None)):
        if key in vars(model):
            setattr(model, key, value)


def merge_and_probe(cfg: ModelConfig, adapter_dir: Path, *, dtype: str, from_quantized: bool,
               allow_mismatch: bool = False) -> MergeResult:
    """Load the base in `dtype` (or NF4 then dequantised to `dtype`), merge the adapter, measure."""
    torch_dtype = DTYPES[dtype]
    loaded = mload.load_base(cfg, quant="4bit" if from_quantized else "none", dtype=torch_dtype)
    base_logits = probe_logits(loaded.model, loaded.processor, loaded.device)
    mload.load_adapter(loaded, adapter_dir, trainable=False, allow_mismatch=allow_mismatch)
    reference = probe_logits(loaded.model, loaded.processor, loaded.device)  # [L, V] what the adapter means

    replaced = 0
    if from_quantized:
        # peft would merge into a Linear4bit by re-quantising the sum (lossy): take the adapter off,
        # dequantise the base layers, then put the same adapter back on plain Linear layers.
        loaded.model = loaded.model.unload()
        replaced = dequantize_linear4bit(loaded.model, torch_dtype)
        if replaced == 0:
            raise RuntimeError("the NF4 base has no Linear4bit layer to dequantise")
        mload.load_adapter(loaded, adapter_dir, trainable=False, allow_mismatch=True)  # checked above
    mload.fold_adapter(loaded)
    merged = probe_logits(loaded.model, loaded.processor, loaded.device)
    return MergeResult(
        loaded=loaded,
        max_abs_diff=float((merged - reference).abs().max()),
        adapter_effect=float((reference - base_logits).abs().max()),
        logit_scale=float(reference.abs().max()),
        dequantized_layers=replaced,
    )


def save_merged(result: MergeResult, out: Path, dtype: str, info: dict[str, Any], *,
                processor: Literal["base", "run"] = "base") -> list[str]:
    """Write model + the base's processor files + merge_info.json into the folder `out`, every
    file readable like any `save_pretrained` output; returns the processor files copied.

    The processor files are the base checkpoint's, byte for byte (image resize bounds, chat
    templates, tokenizer), or with `processor="run"` the same files with the run's image
    resize bounds (what the loaded processor holds) in place of the base's."""
    from visualrft_lite.modeling.hub import check_model_available
    from visualrft_lite.modeling.processor_files import copy_processor, image_bounds, processor_folder

    model, loaded_processor = result.loaded.model, result.loaded.processor
    model.config.dtype = DTYPES[dtype]  # what from_pretrained(dtype="auto") restores
    model.save_pretrained(str(out), safe_serialization=True)
    folder = processor_folder(check_model_available(result.loaded.name))
    low, high = image_bounds(loaded_processor)
    limits = (low, high) if processor == "run" and low is not None and high is not None else None
    copied = copy_processor(folder, out, limits) if folder is not None else []
    if not any(name in copied for name in ("tokenizer_config.json", "tokenizer.json")):
        loaded_processor.save_pretrained(str(out))  # no files to copy: the loaded processor's own
        copied = []
    _ensure_chat_template(loaded_processor, out)
    (out / MERGE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    finish(out)
    return copied


def _ensure_chat_template(processor: Any, folder: Path) -> None:
    """Serving engines read the template from the tokenizer files; make sure one is there."""
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    if not template:
        return
    names = ("chat_template.jinja", "chat_template.json")
    if not any((folder / n).is_file() for n in names):
        (folder / "chat_template.jinja").write_text(template)
