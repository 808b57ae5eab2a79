"""What the loop asks of a model: encode prompts, vision features, prefill, decode, hidden states.

Prompts of one step travel together as a `PromptBatch`: each prompt is encoded on its own
(chat template + image, its own M-RoPE positions), then left-padded to a common length, so
every prompt ends at the same column and the completions of all prompts are decoded as
one batch. Text after a prompt continues at `next_position` (its length + rope delta) on
all three M-RoPE axes; positions are always passed explicitly, so no model-side cached
state leaks between calls.

Each image goes through the vision tower once per step (`image_features`); the whole vision
output (Qwen3-VL's DeepStack features included) is reused by the prefill, the reference pass
and every policy micro-batch (`mm_encoder_outputs`), never re-encoded for each of the G
completions.

Families differ only here and in `load.py`: the vision output (pooled features, plus
DeepStack features for Qwen3-VL), the cache (Qwen3.5's hybrid cache holds linear-attention
states, shared across G rows with the cache API's generic `reorder_cache`), and the chat
template (Qwen3.5 opens `<think>` in the generation prompt: `template_prefix`). Left padding
is exact for linear-attention layers too: transformers zeroes the padded positions' input to
each Gated-DeltaNet layer, so its conv and recurrent states are still zero at the first real
token (tests/test_families.py compares against unpadded forwards).

This module, with the rest of `modeling/`, is the only place that calls transformers,
peft or the tokenizer.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from PIL import Image

END_OF_TURN = "<|im_end|>"
_NEVER_SAMPLED = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
                  "<|endoftext|>", "<|im_start|>")


@dataclass(frozen=True)
class PromptBatch:
    """P prompts, each with one image, encoded and left-padded to one length L."""

    input_ids: torch.Tensor  # [P, L] left-padded with the pad id
    attention_mask: torch.Tensor  # [P, L] 1 on real tokens
    position_ids: torch.Tensor  # [3, P, L] M-RoPE positions (0 on padding)
    next_position: torch.Tensor  # [P] position of the first completion token
    pixel_values: torch.Tensor  # [patches, C] every image's patches, prompt after prompt
    image_grid_thw: torch.Tensor  # [P, 3]
    resized_sizes: tuple[tuple[int, int], ...]  # (width, height) each image was resized to
    texts: tuple[str, ...]  # the templated prompts, for logs

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(1)  # [P] unpadded prompt lengths

    def select(self, index: Sequence[int]) -> PromptBatch:
        """The prompts at `index` (in that order), re-padded to their own longest."""
        index = list(index)
        keep = int(self.lengths[index].max())
        patches = (self.image_grid_thw.prod(-1)).tolist()  # patches per image
        starts = [sum(patches[:i]) for i in range(len(patches))]
        return PromptBatch(
            input_ids=self.input_ids[index, -keep:],
            attention_mask=self.attention_mask[index, -keep:],
            position_ids=self.position_ids[:, index, -keep:],
            next_position=self.next_position[index],
            pixel_values=torch.cat([self.pixel_values[starts[i]: starts[i] + patches[i]] for i in index]),
            image_grid_thw=self.image_grid_thw[index],
            resized_sizes=tuple(self.resized_sizes[i] for i in index),
            texts=tuple(self.texts[i] for i in index),
        )


def concat_batches(batches: Sequence[PromptBatch]) -> PromptBatch:
    """Several PromptBatches as one, left-padded to the longest (padding ids are masked out)."""
    L = max(b.input_ids.shape[1] for b in batches)

    def left(x: torch.Tensor) -> torch.Tensor:  # [..., l] -> [..., L], zeros on the left
        return torch.nn.functional.pad(x, (L - x.shape[-1], 0))

    return PromptBatch(
        input_ids=torch.cat([left(b.input_ids) for b in batches]),
        attention_mask=torch.cat([left(b.attention_mask) for b in batches]),
        position_ids=torch.cat([left(b.position_ids) for b in batches], dim=1),
        next_position=torch.cat([b.next_position for b in batches]),
        pixel_values=torch.cat([b.pixel_values for b in batches]),
        image_grid_thw=torch.cat([b.image_grid_thw for b in batches]),
        resized_sizes=tuple(r for b in batches for r in b.resized_sizes),
        texts=tuple(t for b in batches for t in b.texts),
    )


@dataclass(frozen=True)
class VisionFeatures:
    """The vision tower's output for each image of a PromptBatch, in prompt order.

    `deepstack` is Qwen3-VL's: per image, one tensor per DeepStack layer (added to the
    hidden states of the first decoder layers at the image positions); empty otherwise.
    """

    per_image: tuple[torch.Tensor, ...]  # each [n_image_tokens_i, H]
    deepstack: tuple[tuple[torch.Tensor, ...], ...] = ()  # [image][layer] -> [n_image_tokens_i, H]

    def select(self, index: Sequence[int]) -> VisionFeatures:
        return VisionFeatures(tuple(self.per_image[i] for i in index),
                              tuple(self.deepstack[i] for i in index) if self.deepstack else ())


@dataclass(frozen=True)
class SpecialTokens:
    """Ids the decoder needs: where a completion ends, what it never samples, the pad id."""

    eos: tuple[int, ...]  # end-of-turn first
    never_sampled: tuple[int, ...]  # vision placeholders, turn starts, ids past the tokenizer
    pad: int
    vocab_size: int  # the tokenizer's size (embedding rows past it decode to nothing)


def core(model: Any) -> Any:
    """The transformers model under a peft wrapper (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


_TEMPLATE_OPTIONS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
ASSISTANT_TURN = "<|im_start|>assistant\n"


def set_thinking(processor: Any, thinking: str) -> None:
    """model.thinking: `on` / `off` pass enable_thinking to a chat template that reads it; `auto`,
    and any template without that switch, get nothing (the template's default: transformers
    would otherwise take the unknown variable for a processor argument and say so). Kept
    beside the processor, never saved with it."""
    switch = thinking != "auto" and "enable_thinking" in chat_template_text(processor)
    _TEMPLATE_OPTIONS[processor] = {"enable_thinking": thinking == "on"} if switch else {}


def chat_template_text(processor: Any) -> str:
    """The processor's chat template source ("" when it has none)."""
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one is the chat template
        template = template.get("default", "")
    return template or ""


def thinking_tails(processor: Any) -> dict[str, str]:
    """model.thinking (auto / on / off) -> what the generation prompt writes of the assistant's turn."""
    before = dict(_TEMPLATE_OPTIONS.get(processor, {}))
    tails = {}
    try:
        for mode in ("auto", "on", "off"):
            set_thinking(processor, mode)
            tails[mode] = template_prefix(processor)
    finally:
        _TEMPLATE_OPTIONS[processor] = before
    return tails


def chat_text(processor: Any, prompt: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         **_TEMPLATE_OPTIONS.get(processor, {}))


def template_prefix(processor: Any) -> str:
    """What the generation prompt already wrote of the assistant's turn: "" for Qwen2-VL,
    "<think>\n" for Qwen3.5 (thinking), "<think>\n\n</think>\n\n" with thinking off.

    Completions are scored, printed and supervised as `prefix + completion`, so a correct
    answer after the template's `<think>` earns the format reward."""
    text = chat_text(processor, "?")
    at = text.rfind(ASSISTANT_TURN)
    return text[at + len(ASSISTANT_TURN):] if at >= 0 else ""


def special_tokens(processor: Any) -> SpecialTokens:
    tok = processor.tokenizer
    im_end = tok.convert_tokens_to_ids(END_OF_TURN)
    eos = tuple(i for i in dict.fromkeys([im_end, tok.eos_token_id]) if isinstance(i, int) and i >= 0)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|endoftext|>")
    never = set()
    for t in _NEVER_SAMPLED:
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i != tok.unk_token_id and i >= 0:
            never.add(i)
    return SpecialTokens(eos=eos, never_sampled=tuple(sorted(never - set(eos))), pad=int(pad), vocab_size=len(tok))


def tokenize(processor: Any, text: str) -> list[int]:
    """Token ids of plain text (no special tokens added)."""
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def detokenize(processor: Any, rows: Sequence[torch.Tensor]) -> list[str]:
    """Completions as text, each after what the template already wrote (`template_prefix`)."""
    prefix = template_prefix(processor)
    return [prefix + t for t in processor.tokenizer.batch_decode([r.tolist() for r in rows], skip_special_tokens=True)]


def completion_tokens(processor: Any, text: str) -> list[int]:
    """Token ids of a supervised completion `text` written in full (`<think>…</think> <answer>…`),
    without the part the template's generation prompt already wrote."""
    from visualrft_lite.prompts import after_prefix

    return tokenize(processor, after_prefix(template_prefix(processor), text))


def encode_prompt(processor: Any, image: Image.Image, prompt: str) -> EncodedPrompt:
    """One prompt through the chat template and the processor; ValueError for an image it refuses."""
    text = chat_text(processor, prompt)
    enc = processor(text=[text], images=[image], return_tensors="pt")
    patch = processor.image_processor.patch_size
    _, h, w = (int(v) for v in enc["image_grid_thw"][0])
    return EncodedPrompt(enc["input_ids"][0], enc["mm_token_type_ids"][0], enc["image_grid_thw"],
                         enc["pixel_values"], (w * patch, h * patch), text)


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt as the processor returns it (batch size 1, no padding)."""

    input_ids: torch.Tensor  # [L]
    mm_token_type_ids: torch.Tensor  # [L] 1 on image placeholder tokens
    image_grid_thw: torch.Tensor  # [1, 3]
    pixel_values: torch.Tensor  # [patches, C]
    resized_size: tuple[int, int]
    text: str


def pad_prompts(model: Any, prompts: Sequence[EncodedPrompt], pad: int, device: torch.device) -> PromptBatch:
    """Each prompt's own M-RoPE positions, then left padding to the longest."""
    L = max(p.input_ids.shape[0] for p in prompts)
    P = len(prompts)
    input_ids = torch.full((P, L), pad, dtype=torch.long, device=device)
    attention_mask = torch.zeros((P, L), dtype=torch.long, device=device)
    position_ids = torch.zeros((3, P, L), dtype=torch.long, device=device)
    next_position = []
    for i, p in enumerate(prompts):
        ids = p.input_ids.to(device)[None]  # [1, n]
        n = ids.shape[1]
        # Qwen2.5-VL's extra argument (second_per_grid_ts) is for videos only; every family
        # takes these four for one image.
        positions, delta = core(model).model.get_rope_index(
            ids, mm_token_type_ids=p.mm_token_type_ids.to(device)[None], image_grid_thw=p.image_grid_thw.to(device),
            attention_mask=torch.ones_like(ids))  # [3, 1, n], [1, 1]
        input_ids[i, L - n:] = ids[0]
        attention_mask[i, L - n:] = 1
        position_ids[:, i, L - n:] = positions[:, 0]
        next_position.append(n + int(delta.reshape(-1)[0]))
    return PromptBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        next_position=torch.tensor(next_position, device=device),
        pixel_values=torch.cat([p.pixel_values for p in prompts]).to(device),
        image_grid_thw=torch.cat([p.image_grid_thw for p in prompts]).to(device),
        resized_sizes=tuple(p.resized_size for p in prompts),
        texts=tuple(p.text for p in prompts),
    )


def image_features(model: Any, batch: PromptBatch) -> VisionFeatures:
    """One vision-tower pass over every image of the batch, all of its output kept."""
    out = core(model).model.get_image_features(batch.pixel_values, batch.image_grid_thw, return_dict=True)
    deepstack = getattr(out, "deepstack_features", None) or []  # [layer][image] (Qwen3-VL)
    per_image_layers = tuple(tuple(layer[i] for layer in deepstack) for i in range(len(out.pooler_output)))
    return VisionFeatures(tuple(out.pooler_output), per_image_layers if deepstack else ())


def _mm(features: VisionFeatures, rows: Sequence[int]) -> dict[str, Any]:
    """Precomputed vision output for the rows of a forward pass (row r uses image rows[r]),
    in the output type the family's forward reads."""
    pooled = tuple(features.per_image[i] for i in rows)
    if features.deepstack:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        layers = len(features.deepstack[0])
        deepstack = [tuple(features.deepstack[i][k] for i in rows) for k in range(layers)]  # [layer][row]
        return {"image": BaseModelOutputWithDeepstackFeatures(pooler_output=pooled, deepstack_features=deepstack)}
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return {"image": BaseModelOutputWithPooling(pooler_output=pooled)}


def _mask_or_none(mask: torch.Tensor) -> torch.Tensor | None:
    # An all-ones mask is the plain causal case: let the model take its fastest path.
    return None if bool(mask.all()) else mask


def text_positions(start: torch.Tensor, length: int) -> torch.Tensor:
    """M-RoPE positions of `length` text tokens after per-row starts [B] -> [3, B, length]."""
    pos = start.view(-1, 1) + torch.arange(length, device=start.device)  # [B, length]
    return pos.unsqueeze(0).expand(3, -1, -1)


def prefill(model: Any, batch: PromptBatch, features: VisionFeatures) -> tuple[torch.Tensor, Any]:
    """Run the prompts once; returns next-token logits [P, V] and the KV cache."""
    c = core(model)
    out = c.model(
        input_ids=batch.input_ids,
        attention_mask=_mask_or_none(batch.attention_mask),
        position_ids=batch.position_ids,
        mm_encoder_outputs=_mm(features, range(batch.size)),
        use_cache=True,
    )
    logits = c.lm_head(out.last_hidden_state[:, -1:, :])[:, -1, :]  # [P, V]
    return logits, out.cache


def repeat_cache(cache: Any, times: int) -> None:
    """Each prompt's cached state repeated for its `times` completions, in place.

    `reorder_cache` is the operation every cache layer type implements (attention keys and
    values, and the conv and recurrent states of linear-attention layers; the batch-repeat
    helper exists for attention layers only), so rows 0..P-1 become 0,0,..,1,1,.. for all.
    """
    if times > 1:
        cache.reorder_cache(torch.arange(_cache_rows(cache)).repeat_interleave(times))


def _cache_rows(cache: Any) -> int:
    """The batch size of a filled cache, from any layer type's tensors."""
    for layer in cache.layers:
        keys = getattr(layer, "keys", None)
        if isinstance(keys, torch.Tensor) and keys.dim() > 1:
            return keys.shape[0]
        for states in (getattr(layer, "conv_states", None), getattr(layer, "recurrent_states", None)):
            for t in (states.values() if isinstance(states, dict) else []):
                if isinstance(t, torch.Tensor) and t.dim() > 1:
                    return t.shape[0]
    raise ValueError("the cache holds no state yet; prefill before repeating it")


def decode_step(model: Any, tokens: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor | None,
                cache: Any) -> torch.Tensor:
    """One decode step: tokens [B, 1], positions [3, B, 1], mask [B, past + 1] -> logits [B, V]."""
    c = core(model)
    out = c.model(input_ids=tokens, position_ids=positions, attention_mask=attention_mask, cache=cache,
                  use_cache=True)
    return c.lm_head(out.last_hidden_state)[:, -1, :]


def completion_hidden(model: Any, batch: PromptBatch, features: VisionFeatures, prompt_index: Sequence[int],
                      completion_ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states at the positions that predict each completion token.

    Row r is prompt `prompt_index[r]` followed by completion_ids[r] ([B, T], right-padded
    after EOS: causal attention means that padding never affects the positions that
    matter) -> [B, T, H].
    """
    index = torch.as_tensor(list(prompt_index), device=completion_ids.device)  # [B]
    L = int(batch.lengths[index].max())  # columns left of every selected prompt are padding
    length = completion_ids.shape[1]
    input_ids = torch.cat([batch.input_ids[index, -L:], completion_ids], dim=1)  # [B, L+T]
    mask = torch.cat([batch.attention_mask[index, -L:], torch.ones_like(completion_ids)], dim=1)  # [B, L+T]
    positions = torch.cat([batch.position_ids[:, index, -L:],
                           text_positions(batch.next_position[index], length)], dim=2)  # [3, B, L+T]
    out = core(model).model(
        input_ids=input_ids, attention_mask=_mask_or_none(mask), position_ids=positions,
        mm_encoder_outputs=_mm(features, index.tolist()), use_cache=False,
    )
    return out.last_hidden_state[:, L - 1: L - 1 + length, :]  # [B, T, H]


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


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """No dropout while sampling; the previous mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
