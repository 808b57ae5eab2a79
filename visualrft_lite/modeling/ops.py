"""What the loop asks of a model: encode a prompt, prefill, decode, completion hidden states.

The image of a prompt goes through the vision tower once per step: its features are
reused by the rollout's prefill, the reference pass and every policy micro-batch
(`mm_encoder_outputs`), never re-encoded for each of the G completions. Positions are
passed explicitly (M-RoPE: text after the image continues at index + rope_delta on all
three axes), so no model-side cached state leaks between calls.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from PIL import Image


@dataclass
class PromptInputs:
    """One prompt (chat template + image) encoded for the model, batch size 1."""

    input_ids: torch.Tensor  # [1, L]
    pixel_values: torch.Tensor  # [P, C] flattened patches
    image_grid_thw: torch.Tensor  # [1, 3]
    position_ids: torch.Tensor  # [3, 1, L]
    rope_delta: int  # text position = index + rope_delta after the image
    resized_size: tuple[int, int]  # (width, height) the processor resized the image to
    text: str  # the templated prompt, for logs

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


def core(model: Any) -> Any:
    """The transformers model under a peft wrapper (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def chat_text(processor: Any, prompt: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(model: Any, processor: Any, image: Image.Image, prompt: str, device: torch.device) -> PromptInputs:
    text = chat_text(processor, prompt)
    enc = processor(text=[text], images=[image], return_tensors="pt")
    input_ids = enc["input_ids"].to(device)
    grid = enc["image_grid_thw"].to(device)
    position_ids, rope_deltas = core(model).model.get_rope_index(
        input_ids,
        mm_token_type_ids=enc["mm_token_type_ids"].to(device),
        image_grid_thw=grid,
        attention_mask=torch.ones_like(input_ids),
    )
    patch = processor.image_processor.patch_size
    _, h, w = (int(v) for v in enc["image_grid_thw"][0])
    return PromptInputs(
        input_ids=input_ids,
        pixel_values=enc["pixel_values"].to(device),
        image_grid_thw=grid,
        position_ids=position_ids,
        rope_delta=int(rope_deltas.reshape(-1)[0]),
        resized_size=(w * patch, h * patch),
        text=text,
    )


def image_embeds(model: Any, prompt: PromptInputs) -> torch.Tensor:
    """Vision tower output for the prompt's image: [n_image_tokens, hidden]."""
    out = core(model).model.get_image_features(prompt.pixel_values, prompt.image_grid_thw, return_dict=True)
    return torch.cat(out.pooler_output, dim=0)


def _mm(embeds: torch.Tensor, copies: int) -> dict[str, Any]:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return {"image": BaseModelOutputWithPooling(pooler_output=(embeds,) * copies)}


def text_positions(start: int, length: int, rope_delta: int, batch: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(start, start + length, device=device) + rope_delta  # [length]
    return pos.view(1, 1, -1).expand(3, batch, -1)  # [3, batch, length]


def prefill(model: Any, prompt: PromptInputs, embeds: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Run the prompt once; returns the next-token logits [1, V] and the KV cache."""
    c = core(model)
    out = c.model(
        input_ids=prompt.input_ids,
        position_ids=prompt.position_ids,
        mm_encoder_outputs=_mm(embeds, 1),
        use_cache=True,
    )
    logits = c.lm_head(out.last_hidden_state[:, -1:, :])[:, -1, :]  # [1, V]
    return logits, out.past_key_values


def decode(model: Any, tokens: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
    """One decode step for a batch: tokens [B, 1], positions [3, B, 1] -> logits [B, V]."""
    c = core(model)
    out = c.model(input_ids=tokens, position_ids=positions, past_key_values=cache, use_cache=True)
    return c.lm_head(out.last_hidden_state)[:, -1, :]


def completion_hidden(model: Any, prompt: PromptInputs, embeds: torch.Tensor, completion_ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states at the positions that predict each completion token.

    completion_ids [B, T] (right-padded after EOS; causal attention means padding never
    affects the positions that matter, so no attention mask is needed) -> [B, T, H].
    """
    batch, length = completion_ids.shape
    L = prompt.length
    input_ids = torch.cat([prompt.input_ids.expand(batch, -1), completion_ids], dim=1)  # [B, L+T]
    positions = torch.cat(
        [prompt.position_ids.expand(-1, batch, -1),
         text_positions(L, length, prompt.rope_delta, batch, completion_ids.device)],
        dim=2,
    )  # [3, B, L+T]
    out = core(model).model(
        input_ids=input_ids, position_ids=positions, mm_encoder_outputs=_mm(embeds, batch), use_cache=False
    )
    return out.last_hidden_state[:, L - 1 : L - 1 + length, :]  # [B, T, H]


def lm_head(model: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    head = core(model).lm_head
    return head.weight, head.bias


@contextlib.contextmanager
def reference_mode(model: Any) -> Iterator[None]:
    """The KL reference: the same model with its adapters disabled (no second copy)."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield
    else:
        yield


def special_token_ids(processor: Any) -> tuple[list[int], list[int], int]:
    """(end ids, the end-of-turn token first; ids never to sample: vision placeholders; pad id)."""
    tok = processor.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    eos = [i for i in dict.fromkeys([im_end, tok.eos_token_id]) if isinstance(i, int) and i >= 0]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|endoftext|>")
    suppress = set()
    for t in ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
              "<|endoftext|>", "<|im_start|>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i != tok.unk_token_id and i >= 0:
            suppress.add(i)
    return eos, sorted(suppress - set(eos)), int(pad)
