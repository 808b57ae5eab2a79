"""vrft-lite's prompt, tokenizer and decoder paths against the real hub processor files.

The checkpoints come from tests/real_hub.py: the hub's own tokenizer configs, chat templates
and preprocessor configs (tests/fixtures/hub/, byte-identical, sha256 in its README), a
tokenizer.json built from the real Qwen2 BPE, and tiny random weights. Every expected string
below is written out by hand from the real template text; every expected token id comes from
public material (quoted in the comments) or from the hub's added_tokens_decoder.
"""

from __future__ import annotations

import hashlib
import re
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from real_hub import HUB, build_tokenizer_json, real_checkpoint  # noqa: F401 - the fixture

from visualrft_lite.config import ModelConfig
from visualrft_lite.data.records import Record
from visualrft_lite.modeling import ops

QWEN2_VL, QWEN25_VL, QWEN3_VL = "Qwen2-VL-2B-Instruct", "Qwen2.5-VL-3B-Instruct", "Qwen3-VL-2B-Instruct"
ALL = (QWEN2_VL, QWEN25_VL, QWEN3_VL)
IM_START, IM_END, ENDOFTEXT = 151644, 151645, 151643

# Qwen2-VL / Qwen2.5-VL: the template writes a default system turn when the first message is
# not a system one; Qwen3-VL's writes none. All three open the assistant turn plainly.
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
USER_TURN = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n"
PROMPTS = {
    QWEN2_VL: SYSTEM + USER_TURN + "<|im_start|>assistant\n",
    QWEN25_VL: SYSTEM + USER_TURN + "<|im_start|>assistant\n",
    QWEN3_VL: USER_TURN + "<|im_start|>assistant\n",
}


def _readme_sums() -> dict[str, str]:
    """`folder/file -> sha256` from the table in tests/fixtures/hub/README.md."""
    rows = re.findall(r"^\| `([^`]+)` \| [^|]* \| `([0-9a-f]{64})` \|", (HUB / "README.md").read_text(), re.M)
    return dict(rows)


def test_vendored_files_match_the_sums_in_the_readme():
    # Every vendored file is listed with the sha256 of the hub's file; a file edited, re-saved
    # by a tool (which reorders keys and indents) or swapped for another revision changes it.
    sums = _readme_sums()
    files = sorted(str(p.relative_to(HUB)) for p in HUB.rglob("*") if p.is_file() and p.name != "README.md")
    assert sorted(sums) == files
    for name in files:
        data = (HUB / name).read_bytes()
        if name.endswith(".xz"):
            import lzma

            data = lzma.decompress(data)
        assert hashlib.sha256(data).hexdigest() == sums[name], name


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """`tokenizer(folder)`: the family's tokenizers.Tokenizer, built once per module."""
    built = {}

    def get(folder: str):
        if folder not in built:
            built[folder] = build_tokenizer_json(folder, tmp_path_factory.mktemp(folder))
        return built[folder]

    return get


def test_the_bpe_has_the_hubs_sizes(tmp_path):
    # vocab.json: 151,643 byte-level BPE entries (ids 0..151642); merges.txt: 151,387 merges,
    # no "#version" header. The added tokens start right after, at 151643 = <|endoftext|>.
    tok = build_tokenizer_json(QWEN2_VL, tmp_path)
    assert tok.get_vocab_size(with_added_tokens=False) == 151643
    assert len((tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()) == 151387
    assert tok.token_to_id("<|endoftext|>") == 151643


# Encodings quoted in public code that ran the hub's Qwen2 tokenizer:
#   "Hello world" -> [9707, 1879] and "Hello, this is a test" -> [9707, 11, 419, 374, 264, 1273]
#   (a Qwen3-TTS export script's token map); the mixed English / <|im_end|> / Chinese sample
#   below -> the first 24 ids a tokenizer sanity log printed; "<|im_start|>assistant\n" ->
#   (151644, 77091, 198), the assistant-prefix ids a Qwen3-VL training config pins.
KNOWN_ENCODINGS = [
    ("Hello world", [9707, 1879]),
    ("Hello, this is a test", [9707, 11, 419, 374, 264, 1273]),
    ("Hello world! This is a tokenizer sanity sample.<|im_end|>今天我们测试一个中英混合文本，用于快速基准测试。",
     [9707, 1879, 0, 1096, 374, 264, 45958, 46842, 6077, 13, 151645, 114854, 81705, 46944, 15946, 82847, 105063,
      108704, 3837, 100751, 101098, 109371, 81705, 1773]),
    ("<|im_start|>assistant\n", [151644, 77091, 198]),
]


@pytest.mark.parametrize("folder", ALL)
@pytest.mark.parametrize("text,ids", KNOWN_ENCODINGS, ids=["hello", "test", "mixed", "assistant"])
def test_tokenizer_encodes_like_the_hubs(tokenizer, folder, text, ids):
    assert tokenizer(folder).encode(text, add_special_tokens=False).ids == ids


# Qwen2-VL and Qwen2.5-VL have no <think> token: the tag is byte-level BPE ("<th", "ink", ">"
# = 13708, 766, 29; "</" "think" ">" = 522, 26865, 29). Qwen3-VL added <think> = 151667 and
# </think> = 151668 as single non-special tokens (its added_tokens_decoder), so they decode back.
THINK = {QWEN2_VL: ([13708, 766, 29], [522, 26865, 29]), QWEN25_VL: ([13708, 766, 29], [522, 26865, 29]),
         QWEN3_VL: ([151667], [151668])}


@pytest.mark.parametrize("folder", ALL)
def test_think_tags_tokenize_as_the_hubs(tokenizer, folder):
    tok = tokenizer(folder)
    assert tok.encode("<think>", add_special_tokens=False).ids == THINK[folder][0]
    assert tok.encode("</think>", add_special_tokens=False).ids == THINK[folder][1]


def _load(real_checkpoint, folder: str):
    from visualrft_lite.modeling.load import load_base

    return load_base(ModelConfig(name=str(real_checkpoint(folder)), quant="none", device="cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("folder", ALL)
def test_prompt_is_the_real_templates(real_checkpoint, folder):
    loaded = _load(real_checkpoint, folder)
    assert ops.chat_text(loaded.processor, "What is this?") == PROMPTS[folder]
    # No template here opens the think block, so completions are scored as written.
    assert ops.template_prefix(loaded.processor) == ""


# Token counts of the real tokenizers: the BPE's 151643 + the added tokens (Qwen2-VL 14,
# Qwen2.5-VL 22, Qwen3-VL 26); the embedding keeps the checkpoints' 151936 rows.
TOKENIZER_SIZE = {QWEN2_VL: 151657, QWEN25_VL: 151665, QWEN3_VL: 151669}


@pytest.mark.slow
@pytest.mark.parametrize("folder", ALL)
def test_special_tokens_are_the_real_ids(real_checkpoint, folder):
    loaded = _load(real_checkpoint, folder)
    tokens = ops.special_tokens(loaded.processor)
    assert tokens.eos == (IM_END,)  # every tokenizer_config names <|im_end|> as eos_token
    assert tokens.pad == ENDOFTEXT
    assert tokens.vocab_size == TOKENIZER_SIZE[folder]
    # <|endoftext|>, <|im_start|> and the five vision tokens 151652..151656 are never sampled
    assert tokens.never_sampled == (151643, 151644, 151652, 151653, 151654, 151655, 151656)
    assert loaded.model.config.image_token_id == 151655


class ScriptedHead(torch.nn.Module):
    """An lm_head that ignores its input and puts all mass on script[k] at its k-th call."""

    def __init__(self, script: list[int], vocab: int):
        super().__init__()
        self.script, self.vocab, self.calls = script, vocab, 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [B, S, H] -> [B, S, V]
        logits = torch.full((*hidden.shape[:2], self.vocab), -1e4)
        logits[..., self.script[min(self.calls, len(self.script) - 1)]] = 1e4
        self.calls += 1
        return logits


@pytest.mark.slow
@pytest.mark.parametrize("folder", ALL)
def test_decoder_stops_at_the_real_end_of_turn(real_checkpoint, folder):
    from visualrft_lite import decoder

    loaded = _load(real_checkpoint, folder)
    tok = loaded.processor.tokenizer
    answer = tok("<answer>circle</answer>", add_special_tokens=False)["input_ids"]
    # the answer, then <|im_end|>, then tokens the decoder must never emit ("Hello world")
    script = answer + [IM_END, 9707, 1879]
    ops.core(loaded.model).lm_head = ScriptedHead(script, loaded.model.config.text_config.vocab_size)
    enc = decoder.encode_inputs(loaded.model, loaded.processor, [Image.new("RGB", (112, 112), (200, 30, 30))],
                                ["What is this?"], loaded.device)
    out = decoder.decode(loaded.model, loaded.processor, enc.batch, enc.features,
                         decoder.Decoding.greedy_search(max_new_tokens=len(script) + 4))
    # stopped at 151645 (which counts as a completion token): nothing was generated after it
    assert out.ids.shape[1] == len(answer) + 1
    assert out.ids[0, : int(out.lengths[0])].tolist() == answer + [IM_END]
    assert out.texts == ("<answer>circle</answer>",)  # the end-of-turn token is not text


def _sft_rows(loaded, record: Record) -> list[int]:
    from visualrft_lite import decoder
    from visualrft_lite.sft import sft_targets

    enc = decoder.encode_inputs(loaded.model, loaded.processor, [Image.new("RGB", (112, 112))], ["?"],
                                loaded.device)
    session = SimpleNamespace(processor=loaded.processor, device=loaded.device,
                              cfg=SimpleNamespace(model=SimpleNamespace(coords="rel1000")))
    ids, mask = sft_targets(session, [record], enc)
    return ids[0, : int(mask[0].sum())].tolist()


# "<think>I see it.</think> <answer>circle</answer>" and then the end-of-turn token.
# Qwen2-VL / Qwen2.5-VL: no think token, so Qwen2's pre-tokeniser splits the tags with their
# neighbours: "<think" ">I" " see" " it" ".</" "think" ">" " <" "answer" ">circle" "</" "answer"
# ">", and BPE makes "<th"+"ink" = 13708, 766, ">I" = 65828, ".</" = 3918, ">circle" =
# ">"+"circle" = 29, 25857. Qwen3-VL: the added tokens are cut out first, so "<think>" = 151667,
# "I" = 40, " see" = 1490, " it" = 432, "." = 13, "</think>" = 151668, then the same answer.
ANSWER = [366, 9217, 29, 25857, 522, 9217, 29]  # " <" "answer" ">" "circle" "</" "answer" ">"
SFT_ROWS = {
    QWEN2_VL: [13708, 766, 65828, 1490, 432, 3918, 26865, 29] + ANSWER + [IM_END],
    QWEN25_VL: [13708, 766, 65828, 1490, 432, 3918, 26865, 29] + ANSWER + [IM_END],
    QWEN3_VL: [151667, 40, 1490, 432, 13, 151668] + ANSWER + [IM_END],
}


@pytest.mark.slow
@pytest.mark.parametrize("folder", ALL)
def test_sft_target_tokens(real_checkpoint, folder):
    loaded = _load(real_checkpoint, folder)
    record = Record("x.png", "classify", "circle", fields={"think": "I see it."})
    assert _sft_rows(loaded, record) == SFT_ROWS[folder]


@pytest.mark.slow
@pytest.mark.parametrize("folder,tokens", [(QWEN2_VL, 16), (QWEN25_VL, 16)])
def test_image_tokens_with_patch_14(real_checkpoint, folder, tokens):
    # 112x112 on patch 14 / merge 2: smart_resize keeps 112 (a multiple of 28, and 112^2 =
    # 12544 lies inside both the checkpoint's [3136, 12845056] and the run's default
    # [3136, 401408]), so 8x8 patches -> 4x4 merged = 16 image tokens.
    loaded = _load(real_checkpoint, folder)
    enc = ops.encode_prompt(loaded.processor, Image.new("RGB", (112, 112)), "?")
    assert enc.image_grid_thw.tolist() == [[1, 8, 8]]
    assert int((enc.input_ids == 151655).sum()) == tokens


@pytest.mark.slow
def test_qwen3_vl_checkpoint_processor_upscales_small_images(real_checkpoint):
    # The checkpoint's own Qwen3-VL processor (no vrft-lite in between): patch 16 / merge 2
    # (factor 32), size shortest_edge 65536 = 256^2. 112x112 rounds to 128x128 = 16384 pixels,
    # under the minimum, so smart_resize scales by sqrt(112*112/65536) = 0.4375 and takes
    # ceil(112 / 0.4375 / 32) * 32 = 256: 16x16 patches -> 8x8 merged = 64 image tokens.
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(real_checkpoint(QWEN3_VL))
    assert processor.image_processor.size["shortest_edge"] == 65536
    assert processor.image_processor.size["longest_edge"] == 16777216
    assert processor.image_processor.patch_size == 16
    enc = processor(text=[PROMPTS[QWEN3_VL]], images=[Image.new("RGB", (112, 112))], return_tensors="pt")
    assert enc["image_grid_thw"].tolist() == [[1, 16, 16]]
    assert int((enc["input_ids"] == 151655).sum()) == 64
