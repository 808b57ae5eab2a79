"""The tiny local Qwen2-VL: deterministic, cached, loads and generates like a hub checkpoint.

Also the real-size configs the benchmarks build random models from, checked against
parameter counts derived by hand (on the meta device: nothing is allocated).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from visualrft_lite.modeling import tiny
from visualrft_lite.modeling.tiny import (
    SPECIAL_TOKEN_IDS,
    TOKENIZER_SIZE,
    build_tag,
    default_cache_dir,
    ensure_tiny_model,
    real_shape_config,
)

IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()


def image_prompt(processor, text: str = "What shape is this?") -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ----------------------------------------------------------------------------- build and cache


def test_same_seed_gives_identical_files(tiny_model_dir, tmp_path):
    again = ensure_tiny_model(tmp_path, seed=0)
    assert again.name == tiny_model_dir.name
    files = sorted(p.name for p in tiny_model_dir.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)  # safetensors only
    for name in files:
        assert (tiny_model_dir / name).read_bytes() == (again / name).read_bytes(), name


def test_seed_sets_the_weights(model):
    assert build_tag(0) != build_tag(1)
    # The builder's weights for seed 0 are what was saved and loaded back; seed 1's differ.
    saved = model.state_dict()
    for seed, same in ((0, True), (1, False)):
        fresh = tiny.random_tiny_model(seed).state_dict()
        assert fresh.keys() == saved.keys()
        assert all(torch.equal(fresh[k], saved[k]) for k in saved) is same


def test_cached_build_is_reused(tiny_model_dir, monkeypatch):
    def no_rebuild(out, seed):
        raise AssertionError("rebuilt a complete cached model")

    monkeypatch.setattr(tiny, "_build_into", no_rebuild)
    assert ensure_tiny_model(tiny_model_dir.parent) == tiny_model_dir
    # the session's $VRFT_LITE_HOME/models is the default cache, so the alias finds this build
    assert default_cache_dir() == tiny_model_dir.parent


def fake_build(out: Path, seed: int) -> None:
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / tiny.BUILD_MARKER).write_text(json.dumps({"seed": seed}))


def test_half_written_build_is_replaced_and_force_rebuilds(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "_build_into", fake_build)
    target = tmp_path / build_tag(0)
    target.mkdir()
    (target / "model.safetensors").write_text("truncated")  # a crash mid-build: no marker
    assert ensure_tiny_model(tmp_path) == target
    assert (target / tiny.BUILD_MARKER).is_file() and not (target / "model.safetensors").exists()
    (target / "extra").write_text("x")
    ensure_tiny_model(tmp_path, force=True)
    assert not (target / "extra").exists()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary folders left


def test_concurrent_build_keeps_the_winner(tmp_path, monkeypatch):
    target = tmp_path / build_tag(0)

    def build_while_another_process_finishes(out: Path, seed: int) -> None:
        fake_build(out, seed)
        fake_build(target, seed)  # the other process renames its build into place first
        (target / "winner").write_text("")

    monkeypatch.setattr(tiny, "_build_into", build_while_another_process_finishes)
    assert ensure_tiny_model(tmp_path) == target
    assert (target / "winner").exists()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_default_cache_dir_follows_vrft_lite_home(tmp_path, monkeypatch):
    monkeypatch.setenv("VRFT_LITE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("VRFT_LITE_HOME")
    assert default_cache_dir() == Path("~/.cache/vrft-lite/models").expanduser()


# ----------------------------------------------------------------------------- processor and tokenizer


def test_loads_with_the_auto_classes(processor, model):
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    assert isinstance(processor, Qwen2VLProcessor)
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    assert isinstance(model, Qwen2VLForConditionalGeneration)
    assert model.dtype == torch.float32


def test_special_token_ids_match_the_config(processor, model):
    tok, cfg = processor.tokenizer, model.config
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKEN_IDS}
    assert ids == SPECIAL_TOKEN_IDS
    assert cfg.image_token_id == ids[IMAGE_PAD] == processor.image_token_id
    assert cfg.video_token_id == ids[VIDEO_PAD]
    assert cfg.vision_start_token_id == ids["<|vision_start|>"]
    assert cfg.vision_end_token_id == ids["<|vision_end|>"]
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == cfg.text_config.eos_token_id
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == cfg.text_config.pad_token_id
    assert len(tok) == TOKENIZER_SIZE <= cfg.text_config.vocab_size
    for t in SPECIAL_TOKEN_IDS:  # each special token is one id, never split into bytes
        assert tok(t, add_special_tokens=False)["input_ids"] == [SPECIAL_TOKEN_IDS[t]]


@pytest.mark.parametrize("text", [
    "<think> The image shows a red circle. </think> <answer>circle</answer>",  # the target format
    "<answer>[{'Position': [12, 340, 56, 1000], 'Confidence': 0.93}]</answer>",  # detection answer
    "héllo wörld — 日本 🙂\n\ttabs",  # any bytes round-trip (byte-level BPE)
])
def test_tokenizer_round_trips_and_matches_its_tokenizer_json(processor, tiny_model_dir, text):
    from tokenizers import Tokenizer

    tok = processor.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    # transformers 5 rebuilds Qwen2Tokenizer from tokenizer.json's vocab and merges with its own
    # pre-tokeniser; the file's pipeline must agree, or other readers would tokenise differently.
    assert Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")).encode(text).ids == ids


def test_tokenizer_learned_the_task_vocabulary(processor):
    # The BPE was trained on the prompts: a prompt costs far fewer tokens than bytes.
    prompt = ("Detect all objects belonging to the category 'circle' in the image, and provide the bounding "
              "boxes (between 0 and 1000, integer) and confidence (between 0 and 1, with two decimal places).")
    assert len(processor.tokenizer(prompt)["input_ids"]) < len(prompt.encode()) / 3


def test_chat_template_inserts_image_tokens_matching_the_grid(processor, model):
    text = image_prompt(processor)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert text.endswith("What shape is this?<|im_end|>\n<|im_start|>assistant\n")
    enc = processor(text=[text], images=[Image.new("RGB", (112, 112), "gray")], return_tensors="pt")
    assert enc["image_grid_thw"].tolist() == [[1, 8, 8]]  # 112 / 14 = 8 patches a side
    assert enc["pixel_values"].shape == (64, 3 * 2 * 14 * 14)  # [patches, C * temporal * 14 * 14]
    n_image = int((enc["input_ids"] == model.config.image_token_id).sum())
    assert n_image == 8 * 8 // 4 == 16  # 2x2 merge
    assert int(enc["mm_token_type_ids"].sum()) == n_image  # transformers 5 needs these to place the image


def test_large_images_are_capped_at_112_squared(processor):
    enc = processor(text=[image_prompt(processor)], images=[Image.new("RGB", (640, 480))], return_tensors="pt")
    t, h, w = enc["image_grid_thw"][0].tolist()
    assert t == 1 and h * w * 14 * 14 <= 112 * 112


def test_generates_from_a_chat_prompt_with_an_image(processor, model, shapes_root):
    image = Image.open(next((shapes_root / "classify" / "train" / "circle").glob("*.png")))
    enc = processor(text=[image_prompt(processor)], images=[image], return_tensors="pt")
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=5, min_new_tokens=5, do_sample=True,
                             temperature=1.0, top_p=1.0, top_k=0)
    prompt_len = enc["input_ids"].shape[1]
    assert out.shape == (1, prompt_len + 5)
    assert torch.equal(out[0, :prompt_len], enc["input_ids"][0])
    assert isinstance(processor.tokenizer.decode(out[0, prompt_len:]), str)


def test_generation_config_is_near_greedy_on_purpose(tiny_model_dir, model):
    # Qwen2-VL's own defaults; a rollout that leaves any sampling field unset inherits them and
    # its G samples collapse to one answer. The trainer must pass every field explicitly.
    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert (gen["do_sample"], gen["top_k"], gen["top_p"], gen["temperature"]) == (True, 1, 0.001, 0.1)
    assert model.generation_config.top_k == 1 and model.generation_config.temperature == 0.1
    assert SPECIAL_TOKEN_IDS["<|im_end|>"] in gen["eos_token_id"]


def test_tiny_shapes(model):
    cfg = model.config
    text, vision = cfg.text_config, cfg.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.intermediate_size) == (128, 4, 4, 2, 512)
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2  # M-RoPE covers half the head
    assert (vision.depth, vision.embed_dim, vision.num_heads, vision.patch_size, vision.spatial_merge_size,
            vision.temporal_patch_size) == (2, 64, 4, 14, 2, 2)
    assert vision.hidden_size == text.hidden_size  # the merger projects into the text width
    # untied on purpose (see tiny.LM_HEAD_STD): an lm_head of std 0.1 the adapters can steer
    assert not cfg.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr()
    assert abs(model.lm_head.weight.std().item() - tiny.LM_HEAD_STD) < 0.01
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 3_000_000


def test_lm_head_leaves_room_to_sharpen(model):
    # The final RMSNorm fixes |h| = sqrt(hidden) and lm_head is frozen under LoRA, so no token's
    # logit can exceed sqrt(hidden) * |w_token|. With the usual init std 0.02 that ceiling is
    # 0.02 * 128 = 2.6 and no answer ever passes ~1% probability; std 0.1 gives ~13.
    text = model.config.text_config
    rows = model.lm_head.weight[:TOKENIZER_SIZE]  # [V, H]
    ceiling = text.hidden_size ** 0.5 * rows.norm(dim=1) * model.model.language_model.norm.weight.abs().max()
    assert ceiling.median() > 10


def test_lora_sharpens_the_output(tiny_model_dir, processor):
    # what the ceiling above allows, done: 30 steps of LoRA alone (lm_head frozen) on one next
    # token take its probability from chance (< 1%) to most of the mass
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"]))
    ids = processor.tokenizer("What shape is this?", return_tensors="pt")["input_ids"]
    target = processor.tokenizer(" circle", add_special_tokens=False)["input_ids"][0]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)

    def target_probability() -> float:
        with torch.no_grad():
            return float(torch.softmax(model(input_ids=ids).logits[0, -1], -1)[target])

    before = target_probability()
    for _ in range(30):
        loss = -torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)[target]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = target_probability()
    assert before < 0.01 and after > 0.5, (before, after)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lm_head" in n)


# ----------------------------------------------------------------------------- real shapes


def text_params(h: int, inter: int, layers: int, heads: int, kv: int, vocab: int, tied: bool) -> int:
    """Qwen2 decoder parameters: q/k/v carry biases, o and the MLP do not, 2 RMSNorms a layer."""
    kv_dim = h // heads * kv
    layer = (h * h + h) + 2 * (h * kv_dim + kv_dim) + h * h + 3 * h * inter + 2 * h
    return vocab * h + layers * layer + h + (0 if tied else vocab * h)


REAL = [
    # size, hidden, intermediate, layers, heads, kv heads, vocab, tied, total params (meta device)
    ("2b", 1536, 8960, 28, 12, 2, 151936, True, 2_208_985_600),  # "2B": 1.54B text + 0.67B vision
    ("7b", 3584, 18944, 28, 28, 4, 152064, False, 8_291_375_616),  # "7B": published as 8.29B
]


@pytest.mark.parametrize("size,h,inter,layers,heads,kv,vocab,tied,total", REAL)
def test_real_shape_config(size, h, inter, layers, heads, kv, vocab, tied, total):
    from transformers import Qwen2VLForConditionalGeneration

    cfg = real_shape_config(size)
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads,
            t.num_key_value_heads, t.vocab_size) == (h, inter, layers, heads, kv, vocab)
    assert cfg.tie_word_embeddings is tied
    assert t.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (v.depth, v.embed_dim, v.num_heads, v.mlp_ratio, v.hidden_size) == (32, 1280, 16, 4, h)
    assert cfg.image_token_id == SPECIAL_TOKEN_IDS[IMAGE_PAD]  # the tiny processor can drive it
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(cfg)
    n_text = sum(p.numel() for p in model.model.language_model.parameters())
    # 2B: 151936*1536 embedding + 28 * 46,797,824 per layer + 1536 final norm = 1,543,714,304
    assert n_text == text_params(h, inter, layers, heads, kv, vocab, tied=True)
    assert sum(p.numel() for p in model.parameters()) == total


def test_real_shape_config_rejects_unknown_sizes():
    with pytest.raises(ValueError, match="'2b' or '7b'"):
        real_shape_config("72b")  # type: ignore[arg-type]
