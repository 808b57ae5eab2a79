"""The tiny random-weight Qwen2-VL the demo and the tests run on, built locally, never downloaded.

It is the real architecture class (`Qwen2VLForConditionalGeneration`) with a real processor,
saved like a hub checkpoint, so it goes through exactly the loading code a hub model does:

    tokenizer   byte-level BPE (Qwen2's pre-tokenizer) trained at build time on a built-in corpus:
                the Visual-RFT prompt templates, class and category names, the synthetic shape
                and colour words, digits, box punctuation and a little English. 2048 BPE entries,
                then Qwen2-VL's 14 special tokens in Qwen's order (so ids are fixed: see
                SPECIAL_TOKEN_IDS) and Qwen2-VL's chat template.
    processor   Qwen2-VL image processor (patch 14, merge 2, temporal patch 2, CLIP mean/std),
                pixels capped at 112x112: a 112x112 image is 8x8 patches -> 16 image tokens.
    model       text: hidden 128, 4 layers, 4 heads (2 KV), M-RoPE sections [4, 6, 6], an untied
                lm_head of std 0.1 so LoRA can sharpen its output (see LM_HEAD_STD; the 2B ties);
                vision: depth 2, embed 64, 4 heads. fp32, safetensors.
    generation_config.json  Qwen2-VL's near-greedy defaults (top_k 1, top_p 0.001, temperature
                0.1) ON PURPOSE: rollouts must pass every sampling parameter explicitly.

`ensure_tiny_model()` builds once into a cache folder named by builder version, seed and a
hash of everything that shapes the result, so a changed builder never reuses a stale cache.
`real_shape_config("2b" | "7b")` gives the true Qwen2-VL shapes for random-weight benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from visualrft_lite.errors import cache_home_error

if TYPE_CHECKING:
    from transformers import Qwen2VLConfig

TINY_MODEL_ID = "vrft-lite/tiny-qwen2-vl"
TINY_ALIASES = (TINY_MODEL_ID, "tiny")
BUILDER_VERSION = 2  # bump on any change to what the builder writes
# An untied lm_head drawn with std 0.1 rather than the config's 0.02. The final RMSNorm fixes
# |h| = sqrt(128) and LoRA adapters cannot move lm_head, so no logit can exceed
# sqrt(128) * |w_token| = 128 * std: 2.6 at 0.02, where no token passes ~1% probability and a
# LoRA SFT warm-up stalls at loss ~5 (measured); at 0.1 the ceiling is ~13 and the same SFT
# reaches loss 0.1 in 30 steps while the untrained model still samples near-uniformly (entropy
# 7.0 of 7.66 nats). Tied embeddings that large make a random model repeat its input token (its
# logit is |e|^2), so the tiny model unties them; the real 2B ties.
LM_HEAD_STD = 0.1
BUILD_MARKER = "vrft_tiny.json"  # written last: the folder is complete

BPE_VOCAB_SIZE = 2048  # byte alphabet (256) + merges; the special tokens come after
# Qwen2-VL's special tokens, in the order (and so the relative ids) of the real tokenizer.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
SPECIAL_TOKEN_IDS = {tok: BPE_VOCAB_SIZE + i for i, tok in enumerate(SPECIAL_TOKENS)}
TOKENIZER_SIZE = BPE_VOCAB_SIZE + len(SPECIAL_TOKENS)  # 2062
TINY_VOCAB_SIZE = 2112  # embedding rows: the tokenizer rounded up to 64, like 151936 > 151657 on the real model

# Qwen2-VL-Instruct's chat template, verbatim (default system prompt, image/video placeholders).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Near-greedy on purpose, like Qwen2-VL-2B-Instruct's generation_config.json (ids remapped; see
# the module docstring). The values are those of shared/reference/visual-rft.md. The hub's file
# itself (272 bytes, sha256 d2864bf1edea5863d331edfff48106b586a366f5a2c41aa77731fadc53aa25d2, the
# sum public download manifests pin) was not found in a copy with that sum; the one public copy
# found (270 bytes, other whitespace) says temperature 0.01, so the exact temperature is unverified.
# Either way a rollout that read it would be near-greedy: every sampling parameter is passed.
NEAR_GREEDY = {"do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.1, "repetition_penalty": 1.0}

IMAGE_PROCESSOR = {
    "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],  # Qwen2-VL (OpenAI CLIP) mean / std
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "min_pixels": 56 * 56,  # Qwen2-VL's own minimum (4 image tokens)
    "max_pixels": 112 * 112,  # the tiny demo's cap: at most 8x8 patches -> 16 image tokens
}

TINY_TEXT = {
    "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
    "mrope_section": [4, 6, 6],  # sums to head_dim / 2 = 128 / 4 / 2 = 16, scaled from [16, 24, 24]
}
TINY_VISION = {"depth": 2, "embed_dim": 64, "num_heads": 4, "mlp_ratio": 4}

# True Qwen2-VL shapes (reference file, "Real architecture sizes").
REAL_SHAPES: dict[str, dict[str, Any]] = {
    "2b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
           "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True},
    "7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False},
}
REAL_VISION = {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4}
REAL_MROPE_SECTION = [16, 24, 24]


def _qwen2vl_config(text: dict[str, Any], vision: dict[str, Any], *, vocab_size: int, tie: bool,
                    max_positions: int) -> Qwen2VLConfig:
    from transformers import Qwen2VLConfig

    ids = SPECIAL_TOKEN_IDS
    text_config = {
        "vocab_size": vocab_size, "hidden_size": text["hidden_size"], "intermediate_size": text["intermediate_size"],
        "num_hidden_layers": text["num_hidden_layers"], "num_attention_heads": text["num_attention_heads"],
        "num_key_value_heads": text["num_key_value_heads"], "hidden_act": "silu",
        "max_position_embeddings": max_positions, "rms_norm_eps": 1e-6, "use_sliding_window": False,
        "max_window_layers": text["num_hidden_layers"], "tie_word_embeddings": tie,
        "initializer_range": text.get("initializer_range", 0.02),
        # transformers 5 spells rope_scaling {"type": "mrope"} as rope_type "default" + mrope_section
        "rope_parameters": {"rope_type": "default", "mrope_section": list(text["mrope_section"]),
                            "rope_theta": 1000000.0},
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": vision["depth"], "embed_dim": vision["embed_dim"], "num_heads": vision["num_heads"],
        "mlp_ratio": vision["mlp_ratio"], "hidden_size": text["hidden_size"], "hidden_act": "quick_gelu",
        "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
    }
    return Qwen2VLConfig(
        text_config=text_config, vision_config=vision_config, tie_word_embeddings=tie,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )


def tiny_config() -> Qwen2VLConfig:
    """The tiny model's config (no weights)."""
    return _qwen2vl_config(TINY_TEXT, TINY_VISION, vocab_size=TINY_VOCAB_SIZE, tie=False, max_positions=4096)


def real_shape_config(size: Literal["2b", "7b"]) -> Qwen2VLConfig:
    """The true Qwen2-VL-2B / 7B shapes, for random-weight models of real size (benchmarks).

    The special token ids are the tiny tokenizer's (all below the real vocab size), so the
    tiny processor can drive a real-size model; the embedding keeps the real vocab size.
    """
    if size not in REAL_SHAPES:
        raise ValueError(f"size must be '2b' or '7b', got {size!r}")
    shape = REAL_SHAPES[size]
    text = {**shape, "mrope_section": REAL_MROPE_SECTION}
    return _qwen2vl_config(text, REAL_VISION, vocab_size=shape["vocab_size"], tie=shape["tie_word_embeddings"],
                           max_positions=32768)


# ----------------------------------------------------------------------------------------------
# the tokenizer's training corpus


def _corpus() -> list[str]:
    """Deterministic training text; every line is a BPE training "document".

    The prompt templates are written out here (from the Visual-RFT release) rather than
    imported from `prompts.py`, so editing a prompt does not silently change the tiny
    model's vocabulary; the cache tag hashes this corpus all the same.
    """
    from visualrft_lite.data.synthetic import COLOURS, PLURALS, SHAPES

    shape_words = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    lines: list[str] = []
    for kind, attribute in (("plant", "species"), ("pet", "species"), ("aircraft", "model"), ("car", "model"),
                            ("shape", "type")):
        lines.append(_CLASSIFY.format(kind=kind, attribute=attribute, article="an" if kind[0] in "aeiou" else "a"))
    lines += [_DETECT.format(category=c) for c in (*SHAPES, "stop sign", "fire hydrant")]
    lines += [_GROUND.format(query=f"the {w}") for w in shape_words[:6]]
    lines += [f"How many {PLURALS[s]} are in the image?\n" + _TAIL.format(answer="number") for s in SHAPES]
    lines += [f"Is there a {s} in the image? Answer yes or no." for s in SHAPES]
    lines += _CATEGORY_NAMES + shape_words + [f"the {w}" for w in shape_words]
    lines += [f"<think> The image shows a {w}. </think> <answer>{w.split()[1]}</answer>" for w in shape_words]
    lines += [f"<think> I see a {w} near the top. </think>\n<answer>[{{'Position': [{i * 37 % 1000}, "
              f"{i * 91 % 1000}, {i * 53 % 1000}, {i * 71 % 1000}], 'Confidence': 0.{i % 10}{i * 7 % 10}}}]</answer>"
              for i, w in enumerate(shape_words)]
    lines += ["<think> thinking process </think>\n<answer>(12,34),(560,780)</answer>", "<answer>No Objects</answer>",
              '{"label": "circle", "box": [1, 2, 3, 4]}', "0 1 2 3 4 5 6 7 8 9 10 100 1000", "yes no", "A. B. C. D."]
    lines += _ENGLISH.split("\n")
    return [line for line in lines if line.strip()]


_TAIL = ("Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
         "The output answer format should be as follows:\n<think> ... </think> <answer>{answer}</answer>\n"
         "Please strictly follow the format.")
_CLASSIFY = ("This is an image containing {article} {kind}. Please identify the {attribute} of the {kind} based on "
             "the image.\n" + _TAIL.replace("{answer}", "species name"))
_DETECT = ("Detect all objects belonging to the category '{category}' in the image, and provide the bounding boxes "
           "(between 0 and 1000, integer) and confidence (between 0 and 1, with two decimal places).\n"
           "If no object belonging to the category '{category}' in the image, return 'No Objects'.\n"
           + _TAIL.replace("{answer}", "[{{'Position': [x1, y1, x2, y2], 'Confidence': number}}, ...]"))
_GROUND = ("Output the bounding box in the image corresponding to the instruction: {query} Output the thinking "
           "process in <think> </think> and your grounding box. Following \"<think> thinking process </think>\n"
           "<answer>(x1,y1),(x2,y2)</answer>\" format.")

_CATEGORY_NAMES = [
    # COCO few-shot 8 / open-vocabulary novel 15, LVIS rare 6 / open-vocabulary 13, and a few classes
    "bus", "train", "fire hydrant", "stop sign", "cat", "dog", "bed", "toilet", "mouse", "fork", "hot dog",
    "airplane", "suitcase", "parking meter", "sandwich", "hair drier", "toaster", "snowboard", "frisbee",
    "bear", "horse_buggy", "die", "kitchen_table", "omelet", "papaya", "stepladder", "casserole", "egg_roll",
    "futon", "garbage", "handsaw", "hippopotamus", "mallet", "shot_glass", "sugar_bowl", "british_shorthair",
    "abyssinian", "bengal", "persian", "siamese", "sphynx", "beagle", "pug", "samoyed", "shiba_inu", "pink primrose",
    "sunflower", "daisy", "tiger lily", "rose", "lotus", "water lily", "Boeing 737-800", "Airbus A320", "Cessna 172",
    "Audi A4 Sedan 2012", "BMW M3 Coupe 2012", "Ford Mustang Convertible 2007", "Tesla Model S Sedan 2012",
]

_ENGLISH = """\
The picture shows a small object in the middle of a plain background, and the colour is easy to see.
First I look at the whole image, then I compare the visible features with the classes I know.
There are several objects on the left and on the right; one of them is larger than the others.
The answer should name the class exactly, without extra words, and the box should be tight.
A triangle has three corners, a square has four equal sides, a circle is round, and a star has five points.
Colours: red, green, blue, yellow, purple, orange, white, black, grey, brown, pink.
Animals such as cats and dogs, plants such as flowers and trees, vehicles such as cars, buses and aircraft.
Please look carefully, count every object, and report the number as a single integer.
The bounding box gives the top left corner and the bottom right corner of the region in the image.
If nothing matches the description, say that there are no objects of that category.
Reasoning step by step helps: describe what is visible, decide, then give the final answer.
This model is tiny and random; it exists so that tests and the demo never need a download.
What is shown here? Where is it? How many are there? Which one is it? Why do you think so?
The quick brown fox jumps over the lazy dog near the river bank while the sun is setting.
Training with rewards that can be verified by rules turns a few examples into a better model.
"""


# ----------------------------------------------------------------------------------------------
# building


def _train_tokenizer(corpus: list[str]) -> Any:
    """A byte-level BPE with exactly BPE_VOCAB_SIZE entries, then the special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # The same normaliser / pre-tokeniser / decoder Qwen2Tokenizer rebuilds on load (transformers 5
    # keeps only the vocab and merges of tokenizer.json for it), so both views tokenise alike.
    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=BPE_VOCAB_SIZE, min_frequency=1, show_progress=False, special_tokens=[],
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Repeat the corpus with small variations so BPE has enough distinct pairs to reach the size.
    tok.train_from_iterator(_expanded(corpus), trainer=trainer)
    if tok.get_vocab_size() != BPE_VOCAB_SIZE:
        raise RuntimeError(f"tiny tokenizer reached {tok.get_vocab_size()} entries, expected {BPE_VOCAB_SIZE}; "
                           "enlarge the corpus")
    return tok


def _expanded(corpus: list[str]) -> list[str]:
    """The corpus, plus every line lower-cased, upper-cased and title-cased (more distinct words)."""
    return corpus + [c.lower() for c in corpus] + [c.upper() for c in corpus] + [c.title() for c in corpus]


def build_tokenizer(corpus: list[str] | None = None, cls: Any = None) -> Any:
    """The tiny BPE (trained on `corpus`, default the built-in one) with Qwen's special tokens at
    fixed ids, as a `cls` tokenizer (default Qwen2Tokenizer). Every tiny family shares it."""
    from transformers import Qwen2Tokenizer
    from tokenizers import AddedToken

    cls = cls or Qwen2Tokenizer
    bpe = _train_tokenizer(corpus if corpus is not None else _corpus())
    model = json.loads(bpe.to_str())["model"]
    # The special tokens sit in the BPE vocab itself, after the merges, so that every way of
    # adding them (Qwen2Tokenizer adds eos/pad first on init) finds these exact ids.
    vocab = {**model["vocab"], **SPECIAL_TOKEN_IDS}
    tokenizer = cls(
        vocab=vocab, merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]],
        unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        model_max_length=4096, errors="replace", split_special_tokens=False, clean_up_tokenization_spaces=False,
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]}
    )
    got = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    if got != SPECIAL_TOKEN_IDS:
        raise RuntimeError(f"tiny tokenizer special ids {got} differ from {SPECIAL_TOKEN_IDS}")
    return tokenizer


def _build_processor(corpus: list[str]) -> Any:
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    tokenizer = build_tokenizer(corpus)
    ip = IMAGE_PROCESSOR
    common = dict(patch_size=ip["patch_size"], temporal_patch_size=ip["temporal_patch_size"],
                  merge_size=ip["merge_size"], image_mean=ip["image_mean"], image_std=ip["image_std"])
    image_processor = Qwen2VLImageProcessor(min_pixels=ip["min_pixels"], max_pixels=ip["max_pixels"], **common)
    video_processor = Qwen2VLVideoProcessor(min_pixels=ip["min_pixels"], max_pixels=ip["max_pixels"], **common)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=CHAT_TEMPLATE)


def _build_into(out: Path, seed: int) -> None:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Writing model shards" bar for a 6 MB file is noise
    try:
        _write_checkpoint(out, seed)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    for path in out.iterdir():
        path.chmod(0o644)  # save_pretrained writes some files 0600; a shared cache must be readable


def random_tiny_model(seed: int) -> Any:
    """The tiny model's random weights from `seed` (global RNG state left untouched), fp32, eval."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(tiny_config()).to(torch.float32).eval()
        torch.nn.init.normal_(model.lm_head.weight, std=LM_HEAD_STD)
    return model


def _write_checkpoint(out: Path, seed: int) -> None:
    from transformers import GenerationConfig

    corpus = _corpus()
    processor = _build_processor(corpus)
    processor.save_pretrained(out)

    model = random_tiny_model(seed)
    ids = SPECIAL_TOKEN_IDS
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], **NEAR_GREEDY,
    )
    model.save_pretrained(out, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    (out / BUILD_MARKER).write_text(json.dumps(
        {"id": TINY_MODEL_ID, "builder_version": BUILDER_VERSION, "seed": seed, "parameters": n_params}, indent=1
    ) + "\n")


def build_tag(seed: int) -> str:
    """Cache folder name: builder version, seed, and a hash of every input that shapes the build."""
    spec = json.dumps({"v": BUILDER_VERSION, "lm_head_std": LM_HEAD_STD, "corpus": _corpus(), "text": TINY_TEXT,
                       "vision": TINY_VISION, "bpe": BPE_VOCAB_SIZE, "vocab": TINY_VOCAB_SIZE, "specials": SPECIAL_TOKENS,
                       "template": CHAT_TEMPLATE, "image": IMAGE_PROCESSOR, "gen": NEAR_GREEDY}, sort_keys=True)
    return f"tiny-qwen2-vl-v{BUILDER_VERSION}-seed{seed}-{hashlib.sha256(spec.encode()).hexdigest()[:10]}"


def default_cache_dir() -> Path:
    home = os.environ.get("VRFT_LITE_HOME")
    return (Path(home).expanduser() if home else Path("~/.cache/vrft-lite").expanduser()) / "models"


def ensure_tiny_model(cache_dir: str | Path | None = None, *, seed: int = 0, force: bool = False) -> Path:
    """The tiny model's folder, built on first use (a few seconds on CPU) and reused after.

    Load it as any checkpoint: `AutoProcessor.from_pretrained(path)`,
    `AutoModelForImageTextToText.from_pretrained(path)`. Deterministic from `seed`. Written
    to a temporary sibling and renamed into place; when another process finishes first, its
    (identical) build is kept.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        return _ensure_built(root, seed, force)
    except OSError as e:  # an unwritable or full cache home: say where and how to move it
        raise cache_home_error(root, e) from None


def _ensure_built(root: Path, seed: int, force: bool) -> Path:
    target = root / build_tag(seed)
    if (target / BUILD_MARKER).is_file() and not force:
        return target
    root.mkdir(parents=True, exist_ok=True)
    print(f"building the tiny local model in {target} (once, a few seconds) ...", file=sys.stderr)
    tmp = root / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _build_into(tmp, seed)
        if target.exists() and (force or not (target / BUILD_MARKER).is_file()):
            old = root / f".{target.name}.old-{os.getpid()}"
            os.rename(target, old)  # a stale or half-removed build: swap it out
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / BUILD_MARKER).is_file():  # not another process's complete build
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
