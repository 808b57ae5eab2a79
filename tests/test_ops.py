"""The model operations the loop relies on agree with the model's own forward pass.

A small random Qwen2-VL is built straight from a config (no tokenizer needed). Two prompts
of different lengths and image sizes are left-padded into one PromptBatch; the vision-once
paths (prefill + cached decode of the batch, completion hidden states with shared image
features, rows of different prompts mixed) must give the logits that one plain forward
with pixel_values gives for each prompt on its own.
"""

from __future__ import annotations

import pytest
from helpers import cached_decode_logits
import torch

from visualrft_lite.modeling import ops

IMG, VSTART, VEND, PAD = 50, 48, 49, 0  # image placeholder / vision start / end / pad ids of the toy vocab


def _prompt(head: list[int], grid: tuple[int, int, int], tail: list[int], seed: int) -> ops.EncodedPrompt:
    n_img = grid[0] * grid[1] * grid[2] // 4  # spatial merge 2x2
    ids = torch.tensor(head + [VSTART] + [IMG] * n_img + [VEND] + tail)
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14, generator=g)  # [patches, C*T*P*P]
    return ops.EncodedPrompt(ids, (ids == IMG).int(), torch.tensor([grid]), pixels, (grid[2] * 14, grid[1] * 14), "")


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
    prompts = [_prompt([1, 2], (1, 4, 6), [3, 4, 5], seed=1),  # 6 image tokens, 13 tokens
               _prompt([1], (1, 2, 4), [6], seed=2)]  # 2 image tokens, 6 tokens: left-padded by 7
    return model, prompts


def own_forward(model, prompt: ops.EncodedPrompt, completion: torch.Tensor) -> torch.Tensor:
    """Reference: the model's own forward with pixel_values over one prompt + its completions."""
    B = completion.shape[0]
    ids = torch.cat([prompt.input_ids.expand(B, -1), completion], 1)
    out = model(input_ids=ids, pixel_values=prompt.pixel_values.repeat(B, 1),
                image_grid_thw=prompt.image_grid_thw.repeat(B, 1), mm_token_type_ids=(ids == IMG).int())
    L = prompt.input_ids.shape[0]
    return out.logits[:, L - 1: -1]  # [B, T, V] positions predicting the completion


def test_left_padding_and_positions(toy):
    model, prompts = toy
    batch = ops.pad_prompts(model, prompts, PAD, torch.device("cpu"))
    assert batch.input_ids.shape == (2, 13)
    assert batch.attention_mask[1].tolist() == [0] * 7 + [1] * 6
    assert batch.lengths.tolist() == [13, 6]
    # text after a prompt continues at its own max position + 1 (the image rows compress positions)
    for i in range(2):
        assert int(batch.next_position[i]) == int(batch.position_ids[:, i].max()) + 1


def test_completion_hidden_matches_full_forward_across_mixed_prompts(toy):
    model, prompts = toy
    batch = ops.pad_prompts(model, prompts, PAD, torch.device("cpu"))
    completion = torch.tensor([[7, 8, 9], [10, 11, 12], [13, 14, 15]])  # rows: prompt 0, 1, 0
    index = [0, 1, 0]
    with torch.no_grad():
        features = ops.image_features(model, batch)
        mine = model.lm_head(ops.completion_hidden(model, batch, features, index, completion))  # [3, 3, V]
        for r, p in enumerate(index):
            ref = own_forward(model, prompts[p], completion[r: r + 1])
            torch.testing.assert_close(mine[r: r + 1], ref, atol=1e-5, rtol=1e-5)


def test_prefill_and_cached_decode_match_full_forward_for_a_padded_batch(toy):
    model, prompts = toy
    batch = ops.pad_prompts(model, prompts, PAD, torch.device("cpu"))
    n = 2  # completions per prompt share its prefill
    completion = torch.tensor([[7, 8, 9], [10, 11, 12], [13, 14, 15], [16, 17, 18]])  # rows 0,1: prompt 0
    with torch.no_grad():
        features = ops.image_features(model, batch)
        mine = cached_decode_logits(model, batch, features, completion, n)  # [4, T, V]
        for r in range(4):
            ref = own_forward(model, prompts[r // n], completion[r: r + 1])
            torch.testing.assert_close(mine[r: r + 1], ref, atol=1e-5, rtol=1e-5)


def test_select_keeps_each_prompt_and_its_image(toy):
    model, prompts = toy
    batch = ops.pad_prompts(model, prompts, PAD, torch.device("cpu"))
    one = batch.select([1])
    alone = ops.pad_prompts(model, [prompts[1]], PAD, torch.device("cpu"))
    for name in ("input_ids", "attention_mask", "position_ids", "next_position", "pixel_values", "image_grid_thw"):
        assert torch.equal(getattr(one, name), getattr(alone, name)), name


def test_each_image_encoded_once_per_batch(toy, monkeypatch):
    # The vision tower runs once for all prompts, however many completions and passes share it.
    model, prompts = toy
    batch = ops.pad_prompts(model, prompts, PAD, torch.device("cpu"))
    calls = []
    orig = model.model.visual.forward
    monkeypatch.setattr(model.model.visual, "forward", lambda *a, **k: calls.append(1) or orig(*a, **k))
    with torch.no_grad():
        features = ops.image_features(model, batch)
        ops.completion_hidden(model, batch, features, [0, 1] * 4, torch.tensor([[7, 8]] * 8))
        ops.prefill(model, batch, features)
    assert len(calls) == 1
    assert [f.shape[0] for f in features.per_image] == [6, 2]
