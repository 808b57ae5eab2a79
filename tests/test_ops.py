"""The model operations the loop relies on agree with the model's own forward pass.

A small random Qwen2-VL is built straight from a config (no tokenizer needed): the
vision-once paths (prefill + cached decode, completion hidden states with shared image
features) must give the same logits as one plain forward with pixel_values.
"""

from __future__ import annotations

import pytest
import torch

from visualrft_lite.modeling import ops

IMG, VSTART, VEND = 50, 48, 49  # image placeholder / vision start / end ids of the toy vocab


@pytest.fixture(scope="module")
def toy():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0}),
        vision_config=dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=IMG, video_token_id=51, vision_start_token_id=VSTART, vision_end_token_id=VEND,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    grid = torch.tensor([[1, 4, 6]])  # 4x6 patches -> 6 merged image tokens
    n_img = 6
    ids = torch.tensor([[1, 2, VSTART] + [IMG] * n_img + [VEND, 3, 4, 5]])  # [1, L]
    pixel_values = torch.randn(24, 3 * 2 * 14 * 14)  # [patches, C*T*P*P]
    mm = (ids == IMG).int()
    position_ids, deltas = model.model.get_rope_index(ids, mm_token_type_ids=mm, image_grid_thw=grid,
                                                      attention_mask=torch.ones_like(ids))
    prompt = ops.PromptInputs(input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid,
                              position_ids=position_ids, rope_delta=int(deltas.reshape(-1)[0]),
                              resized_size=(84, 56), text="")
    return model, prompt


def full_logits(model, prompt, completion):
    """Reference: the model's own forward with pixel_values over prompt + completion."""
    ids = torch.cat([prompt.input_ids.expand(completion.shape[0], -1), completion], 1)
    mm = (ids == IMG).int()
    out = model(input_ids=ids, pixel_values=prompt.pixel_values.repeat(completion.shape[0], 1),
                image_grid_thw=prompt.image_grid_thw.repeat(completion.shape[0], 1), mm_token_type_ids=mm)
    return out.logits  # [B, L+T, V]


def test_completion_hidden_matches_full_forward(toy):
    model, prompt = toy
    completion = torch.tensor([[7, 8, 9], [10, 11, 12]])  # [2, 3]
    with torch.no_grad():
        embeds = ops.image_embeds(model, prompt)
        hidden = ops.completion_hidden(model, prompt, embeds, completion)  # [2, 3, H]
        mine = model.lm_head(hidden)
        ref = full_logits(model, prompt, completion)[:, prompt.length - 1 : -1]  # positions predicting completion
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)


def test_prefill_and_cached_decode_match_full_forward(toy):
    model, prompt = toy
    completion = torch.tensor([[7, 8], [9, 10], [11, 12]])  # 3 samples share one prefill
    with torch.no_grad():
        embeds = ops.image_embeds(model, prompt)
        first, cache = ops.prefill(model, prompt, embeds)  # [1, V]
        cache.batch_repeat_interleave(3)
        step_logits = [first.expand(3, -1)]
        for t in range(completion.shape[1] - 1):
            pos = ops.text_positions(prompt.length + t, 1, prompt.rope_delta, 3, completion.device)
            step_logits.append(ops.decode(model, completion[:, t : t + 1], pos, cache))
        mine = torch.stack(step_logits, 1)  # [3, T, V]
        ref = full_logits(model, prompt, completion)[:, prompt.length - 1 : -1]
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)


def test_image_encoded_once_per_group(toy, monkeypatch):
    # The vision tower runs once for the group, however many completions share it.
    model, prompt = toy
    calls = []
    orig = model.model.visual.forward
    monkeypatch.setattr(model.model.visual, "forward", lambda *a, **k: calls.append(1) or orig(*a, **k))
    with torch.no_grad():
        embeds = ops.image_embeds(model, prompt)
        ops.completion_hidden(model, prompt, embeds, torch.tensor([[7, 8]] * 8))
        _, cache = ops.prefill(model, prompt, embeds)
    assert len(calls) == 1
