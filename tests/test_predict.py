"""`vrft-lite predict` on the tiny model: decoding prompts together equals decoding them one
at a time (greedy: same tokens; sampled: same distribution per row), answers are printed and drawn in pixels of the original image,
an unreadable image does not stop the others, and misuse is a one-line error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import assert_one_line_error, invoke
import torch
from PIL import Image

from visualrft_lite import inference as gen
from visualrft_lite import decoder
from visualrft_lite.draw import PALETTE, drawing_paths
from visualrft_lite.rewards import parse_prediction

TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with large random B on every layer: a fresh one (B = 0) would change nothing,
    and this one makes the tiny model's greedy answers depend on the input (it repeats one
    word for every input without it)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0.0, 1.0)
    out = tmp_path_factory.mktemp("adapter") / "final"
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three noisy pictures of different sizes (so the batch needs padding)."""
    folder = tmp_path_factory.mktemp("images")
    gen_ = torch.Generator().manual_seed(0)
    paths = []
    for k, (w, h) in enumerate([(150, 90), (64, 64), (90, 200)]):
        pixels = (torch.rand(h, w, 3, generator=gen_) * 255).to(torch.uint8).numpy()
        path = folder / f"img{k}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def model_args(tiny_model_dir: Path) -> list[str]:
    return ["--model", tiny_model_dir, "--set", "model.quant=none", "--set", "model.device=cpu"]


# ----------------------------------------------------------------------------- generation


def _loaded_and_inputs(tiny_model_dir, adapter_dir, images):
    from visualrft_lite.config import ModelConfig

    cfg = ModelConfig(name=str(tiny_model_dir), quant="none", device="cpu", max_pixels=12544)
    loaded = gen.load_for_inference(cfg, adapter_dir)
    pictures = [Image.open(p).convert("RGB") for p in images]
    prompts = ["short", "a much longer question about the shapes in the picture, left-padded", "count"]
    return loaded, pictures, prompts


def test_batched_decoding_equals_one_prompt_at_a_time(tiny_model_dir, adapter_dir, images):
    # Greedy: the same tokens whether the prompts (different lengths and image sizes, so
    # left-padded) decode together, one at a time, or in rounds capped by max_rows.
    from visualrft_lite.decoder import Decoding, decode, encode_inputs

    loaded, pictures, prompts = _loaded_and_inputs(tiny_model_dir, adapter_dir, images)
    greedy = Decoding.greedy_search(10)
    enc = encode_inputs(loaded.model, loaded.processor, pictures, prompts, loaded.device)
    batched = decode(loaded.model, loaded.processor, enc.batch, enc.features, greedy, per_prompt=2)
    capped = decode(loaded.model, loaded.processor, enc.batch, enc.features, greedy, per_prompt=2, max_rows=3)
    single = []
    for picture, prompt in zip(pictures, prompts):
        one = encode_inputs(loaded.model, loaded.processor, [picture], [prompt], loaded.device)
        single.append(decode(loaded.model, loaded.processor, one.batch, one.features, greedy).texts[0])
    assert len(set(single)) > 1  # the answers depend on the input, so padding bugs would show
    assert list(batched.texts) == [t for t in single for _ in range(2)]
    assert capped.texts == batched.texts
    assert batched.prompt_index == (0, 0, 1, 1, 2, 2)


def test_sampled_rows_have_the_distribution_of_their_own_prompt(tiny_model_dir, adapter_dir, images):
    # Sampling: each row's log-probs (its distribution given its prefix) are the same in the
    # mixed, padded batch as for its prompt alone, so a row samples from its own prompt's policy.
    from visualrft_lite.logprobs import all_logprobs
    from visualrft_lite.decoder import Completions, Decoding, decode, encode_inputs

    loaded, pictures, prompts = _loaded_and_inputs(tiny_model_dir, adapter_dir, images)
    generator = torch.Generator().manual_seed(0)
    enc = encode_inputs(loaded.model, loaded.processor, pictures, prompts, loaded.device)
    sampled = decode(loaded.model, loaded.processor, enc.batch, enc.features, Decoding(max_new_tokens=8),
                     per_prompt=3, generator=generator)
    assert len(set(sampled.texts)) > 3
    mixed = all_logprobs(loaded.model, enc.batch, enc.features, sampled, micro_batch=4, temperature=1.0)  # [9, T]
    for p, (picture, prompt) in enumerate(zip(pictures, prompts)):
        one = encode_inputs(loaded.model, loaded.processor, [picture], [prompt], loaded.device)
        rows = [r for r, q in enumerate(sampled.prompt_index) if q == p]
        alone = Completions(sampled.ids[rows], sampled.mask[rows], (), (0,) * len(rows))
        torch.testing.assert_close(all_logprobs(loaded.model, one.batch, one.features, alone, 8, 1.0),
                                   mixed[rows], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- predict


@pytest.fixture
def canned(monkeypatch):
    """Replace generation with a fixed detection answer (0-1000 coordinates)."""
    text = ("<think>two shapes</think><answer>[{'Position': [100, 200, 500, 600], 'Confidence': 0.9}, "
            "{'Position': [600, 100, 900, 300], 'Confidence': 0.4}]</answer>")

    def fake(model, processor, batch, features, decoding, **_):
        assert all("Detect all objects belonging to the category 'circle'" in p for p in batch.texts)  # the training prompt
        return SimpleNamespace(texts=(text,) * batch.size)

    monkeypatch.setattr(decoder, "decode", fake)
    return text


def test_predict_prints_pixel_boxes_and_draws_the_original_size(tiny_model_dir, images, canned, tmp_path):
    out_png = tmp_path / "out.png"
    result = invoke("predict", images[0], "--task", "detect", "--category", "circle", "--draw", out_png,
                    *model_args(tiny_model_dir))
    assert result.exit_code == 0, result.output
    # 150x90 image: [100, 200, 500, 600] / 1000 -> x * 0.15, y * 0.09
    assert "[15, 18, 75, 54]  0.90" in result.stdout
    assert "[90, 9, 135, 27]  0.40" in result.stdout
    assert "reasoning: two shapes" in result.stdout
    drawing = Image.open(out_png)
    assert drawing.size == (150, 90)
    assert drawing.getpixel((15, 36))[:3] == PALETTE[0]  # the left edge of the first box, where the answer put it


def test_predict_json_and_several_drawings(tiny_model_dir, images, canned, tmp_path):
    result = invoke("predict", *images[:2], "--task", "detect", "--category", "circle", "--json",
                    "--draw", tmp_path / "d.png", *model_args(tiny_model_dir))
    assert result.exit_code == 0, result.output
    objs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["image"] for o in objs] == [str(p) for p in images[:2]]
    assert objs[1]["image_size"] == [64, 64]
    assert objs[1]["parsed"][0] == {"box": [6.4, 12.8, 32.0, 38.4], "confidence": 0.9}
    assert [Image.open(tmp_path / f"d-{n}.png").size for n in (1, 2)] == [(150, 90), (64, 64)]


def test_an_unreadable_image_is_reported_and_the_others_still_run(tiny_model_dir, images, canned, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    result = invoke("predict", images[0], broken, images[1], "--task", "detect", "--category", "circle",
                    "--json", *model_args(tiny_model_dir))
    assert result.exit_code == 1
    objs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [("error" in o) for o in objs] == [False, True, False]  # argument order kept
    assert "cannot read image" in objs[1]["error"]


def test_predict_on_the_real_tiny_model(tiny_model_dir, adapter_dir, images):
    result = invoke("predict", *images, "--task", "ground", "--query", "the red circle", "--adapter", adapter_dir,
                    "--json", "--max-new-tokens", "8", *model_args(tiny_model_dir))
    assert result.exit_code == 0, result.output
    objs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(objs) == 3
    for obj, path in zip(objs, images):
        size = Image.open(path).size
        assert obj["image_size"] == list(size)
        expected = parse_prediction("ground", obj["completion"], image_size=size)  # the reward's own reading
        assert obj["parsed"] == (None if expected is None else [round(v, 2) for v in expected])


def test_an_image_the_processor_refuses_does_not_sink_its_batch(tiny_model_dir, adapter_dir, images, tmp_path):
    # 1000x4 px: the processor refuses aspect ratios over 200; the other images of the batch still run
    thin = tmp_path / "thin.png"
    Image.new("RGB", (1000, 4), "white").save(thin)
    result = invoke("predict", images[0], thin, images[1], "--task", "classify", "--adapter", adapter_dir,
                    "--json", "--max-new-tokens", "4", *model_args(tiny_model_dir))
    assert result.exit_code == 1  # one image failed
    objs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["image"] for o in objs] == [str(images[0]), str(thin), str(images[1])]
    assert "refused by the processor" in objs[1]["error"] and "Traceback" not in result.output
    assert objs[0]["completion"] is not None and objs[2]["completion"] is not None


# ----------------------------------------------------------------------------- errors


def test_missing_image_is_a_one_line_error(tmp_path):
    assert_one_line_error(invoke("predict", tmp_path / "nope.jpg", "--task", "classify"), "not found", "nope.jpg")


def test_unknown_task_is_a_one_line_error(images):
    assert_one_line_error(invoke("predict", images[0], "--task", "detction"), "unknown task", "did you mean 'detect'")


def test_detect_without_category_is_a_one_line_error(images):
    assert_one_line_error(invoke("predict", images[0], "--task", "detect"), "--category")


def test_adapter_dir_without_adapter_is_a_one_line_error(images, tmp_path):
    assert_one_line_error(invoke("predict", images[0], "--task", "classify", "--adapter", tmp_path),
                          "adapter_config.json")


def test_base_adapter_mismatch_is_a_one_line_error(tiny_model_dir, adapter_dir, images, tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = AutoConfig.from_pretrained(str(tiny_model_dir))
    cfg.text_config.intermediate_size *= 2  # the adapter's down_proj no longer fits
    other = tmp_path / "other"
    AutoModelForImageTextToText.from_config(cfg).save_pretrained(str(other))
    for f in Path(tiny_model_dir).iterdir():  # processor, tokenizer, chat template
        if f.is_file() and not (other / f.name).exists():
            shutil.copy(f, other / f.name)
    result = invoke("predict", images[0], "--task", "classify", "--adapter", adapter_dir, "--model", other,
                    "--set", "model.quant=none", "--set", "model.device=cpu")
    assert_one_line_error(result, "does not fit base")


@pytest.mark.parametrize(
    "target, names, expected",
    [
        ("out.png", ["a.jpg"], ["out.png"]),  # one image: the path itself
        ("out.png", ["a.jpg", "b.jpg"], ["out-1.png", "out-2.png"]),  # several: numbered in argument order
        ("out", ["a.jpg", "b.jpg"], ["out-1.png", "out-2.png"]),  # no suffix: .png
        ("dir", ["x/a.jpg", "y/a.jpg"], ["dir/a.png", "dir/a-2.png"]),  # an existing directory: image names, kept apart
    ],
)
def test_drawing_paths(target, names, expected, tmp_path):
    (tmp_path / "dir").mkdir()
    got = drawing_paths(tmp_path / target, names)
    assert [str(p.relative_to(tmp_path)) for p in got] == expected
