"""Write presets/*.yaml for every setting of the Visual-RFT paper (and `demo`).

The presets are data, committed to the repo; this script is how they were made, so that
one change to a shared knob reaches all of them. Every knob carries a comment with its
unit and where its value comes from (shared/reference/visual-rft.md: "the paper").
`tests/test_presets.py` checks that the committed files match this script's output.

    python tools/make_presets.py            # rewrite presets/
    python tools/make_presets.py --check    # exit 1 if presets/ is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

PRESETS = Path(__file__).resolve().parent.parent / "presets"
SHOTS = (1, 2, 4, 8, 16)

COCO_8 = ["bus", "train", "fire hydrant", "stop sign", "cat", "dog", "bed", "toilet"]
COCO_NOVEL_15 = ["mouse", "fork", "hot dog", "cat", "airplane", "suitcase", "parking meter", "sandwich", "train",
                 "hair drier", "toilet", "toaster", "snowboard", "frisbee", "bear"]
LVIS_RARE_6 = ["horse_buggy", "die", "kitchen_table", "omelet", "papaya", "stepladder"]
LVIS_OV_13 = ["casserole", "die", "egg_roll", "futon", "garbage", "handsaw", "hippopotamus", "kitchen_table",
              "mallet", "omelet", "shot_glass", "stepladder", "sugar_bowl"]

# dataset -> (prompt noun, attribute, data.source, folder the official download leaves,
#             released 4-shot hub set, classes, official test images, note on the test split)
CLASSIFICATION = {
    "flowers": ("plant", "species", "flowers102", "flowers-102", "laolao77/ViRFT_CLS_flower_4_shot", 102, 6149,
                "the paper scores Visual-RFT's own list of 2463"),
    "pets": ("pet", "species", "oxford_pets", "oxford-iiit-pet", "laolao77/ViRFT_CLS_pets37_4shot", 37, 3669,
             "as the paper"),
    "aircraft": ("aircraft", "model", "fgvc_aircraft", "fgvc-aircraft-2013b", "laolao77/ViRFT_CLS_fgvc_aircraft_4_shot",
                 100, 3333, "as the paper"),
    "cars": ("car", "model", "stanford_cars", "stanford_cars", "laolao77/ViRFT_CLS_car196_4shot", 196, 8041,
             "as the paper; no longer downloadable: fetch a copy, point data.path at it"),
}

# size -> (hub id, G, the model's name in titles, preset name suffix)
MODELS = {
    "2b": ("Qwen/Qwen2-VL-2B-Instruct", 8, "Qwen2-VL-2B", ""),
    "7b": ("Qwen/Qwen2-VL-7B-Instruct", 4, "Qwen2-VL-7B", "-7b"),
    # the families most fine-tuning starts from today, for the paper's headline settings;
    # model.coords: auto follows each checkpoint's box convention
    "qwen2.5-vl-3b": ("Qwen/Qwen2.5-VL-3B-Instruct", 8, "Qwen2.5-VL-3B", "-qwen2.5-vl-3b"),
    "qwen3-vl-2b": ("Qwen/Qwen3-VL-2B-Instruct", 8, "Qwen3-VL-2B", "-qwen3-vl-2b"),
    "qwen3.5-2b": ("Qwen/Qwen3.5-2B", 8, "Qwen3.5-2B", "-qwen3.5-2b"),
}
NEWER = ("qwen2.5-vl-3b", "qwen3-vl-2b", "qwen3.5-2b")
PATCH16 = ("qwen3-vl-2b", "qwen3.5-2b")  # 16-pixel patches: one image token is 32x32 pixels, not 28x28


def method(size: str) -> str:
    """How the preset trains, for its description."""
    return "16-bit LoRA GRPO" if size.startswith("qwen3.5") else "4-bit + LoRA GRPO"


def pixels(size: str) -> str:
    """The paper's image budget (min 4·28·28, max 512·28·28 pixels) in the model's own token size.

    Patch-16 families keep the paper's area, 401408 = 392·32·32 exactly, so an image is resized
    to the same resolution as in the paper (392 image tokens of 32x32 pixels instead of 512 of
    28x28), and the paper's floor of 4 image tokens, 4·32·32 = 4096."""
    if size in PATCH16:
        return """  min_pixels: 4096            # 4*32*32: the paper's floor of 4 image tokens (32x32 pixels a token)
  max_pixels: 401408          # 392*32*32: the paper's area (512*28*28), so 392 image tokens at most"""
    return """  min_pixels: 3136            # 4*28*28: the paper's smallest image area after resize (4 image tokens)
  max_pixels: 401408          # 512*28*28: the paper's largest image area after resize (512 image tokens)"""


def label(size: str) -> str:
    return MODELS[size][2]


def suffix(size: str) -> str:
    return MODELS[size][3]


def yaml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


TWO_STAGE = """
  two_stage: true             # ask "is there a ...?" first, boxes only where the answer is not no (the paper); --one-stage skips it"""


def common(size: str, steps: int, steps_note: str, *, detection: bool = False) -> str:
    name, G, _, _ = MODELS[size]
    return f"""
model:
  name: {name}  # hub id or local directory
  quant: auto                 # the family's: NF4 4-bit, or 16-bit for Qwen3.5 (QLoRA not advised for it); the paper: bf16 full weights on 8xA100
  dtype: auto                 # bf16 compute on CUDA, fp32 on CPU
  attn: auto                  # flash_attention_2 when installed, else sdpa
  coords: auto                # the checkpoint's convention: 0-1000 relative (Qwen2-VL, Qwen3-VL, Qwen3.5), resized-image pixels (Qwen2.5-VL)
  thinking: auto              # as the chat template opens the turn (Qwen3.5: <think>); on / off set enable_thinking where it has one
{pixels(size)}
  gradient_checkpointing: true  # recompute activations in backward: less memory, ~30% more time

lora:
  r: 64                       # adapter rank
  alpha: 128                  # update scale alpha/r = 2
  dropout: 0.05               # dropout on the adapter input
  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]  # every language linear layer
  train_vision: false         # the vision tower stays frozen

rollout:
  num_generations: {G}          # G completions per image (the paper: 8 for 2B, 4 for 7B)
  max_completion_length: 256  # tokens (the paper)
  max_prompt_length: 1024     # tokens, image included (the paper)
  temperature: 1.0            # the paper; passed explicitly, never read from generation_config.json
  top_p: 1.0                  # off
  top_k: 0                    # off

grpo:
  beta: 0.04                  # KL weight to the adapters-disabled reference (the paper's TRL default of its day)
  loss_type: grpo             # per-sequence token mean, then batch mean (the paper)
  scale_rewards: group        # advantages divided by the group's std (the paper)
  num_iterations: 1           # one update per rollout, no ratio clipping (the paper)

train:
  steps: {steps}                  # rollout steps ({steps_note})
  prompts_per_step: 2         # images per step: the paper's per-device batch 1 x grad-accum 2
  micro_batch_size: 4         # completions per forward/backward; lower it to save memory
  learning_rate: 1.0e-5       # the paper: 1e-6 for full fine-tuning; LoRA needs a larger step
  lr_schedule: linear         # linear decay after warm-up (the paper)
  warmup_steps: 5             # steps of linear warm-up
  max_grad_norm: 1.0          # gradient clipping
  optimizer: adamw            # paged_adamw_8bit saves memory on CUDA
  seed: 0                     # seeds data order, sampling, dropout
  save_every: 50              # checkpoint every N steps
  samples_every: 10           # write completions to samples.jsonl every N steps

eval:
  batch_size: 8               # prompts per greedy generate call
  max_new_tokens: 256         # tokens per answer{TWO_STAGE if detection else ""}
"""


def classification(ds: str, shots: int, size: str) -> str:
    kind, attr, source, folder, hub, classes, tests, note = CLASSIFICATION[ds]
    released = (f"\n  # Visual-RFT's released set instead: --set data.source=hub data.path={hub} data.eval_path=data"
                if shots == 4 else "")
    data = f"""  source: {source}{' ' * (20 - len(source))}# the official release, read in its own layout with its class names and splits
  path: data                  # the folder holding {folder}/ (or {folder}/ itself); a class-folder re-pack works too
  download: true              # fetch the release there (torchvision's downloader) when it is missing
  task: classify
  shots: {shots}                    # images per class ({classes} classes) from the official training images, seeded
  # eval: the official test list, {tests} images ({note}){released}
  kind: {kind}                 # prompt: "This is an image containing a {kind}..."
  attribute: {attr}            # prompt: "...identify the {attr} of the {kind}..."
  seed: 0                     # k-shot sampling seed"""
    return f"""# {ds} {shots}-shot classification, {label(size)} (Visual-RFT paper, fine-grained classification).
name: {ds}-{shots}shot{suffix(size)}
description: {ds.capitalize()} {shots}-shot classification, {label(size)}, {method(size)}
data:
{data}

reward:
  match: exact                # the normalised answer must equal the label (no substring loophole)
  weights: {{format: 1.0, accuracy: 1.0}}  # R = R_format + R_accuracy (the paper)
{common(size, 200, "about 4 passes over a 1-shot set")}"""


def coco_fewshot(shots: int, size: str) -> str:
    released = ("\n  # Visual-RFT's released 32 images instead: --set data.source=hub "
                "data.path=laolao77/ViRFT_COCO_8_cate_4_shot data.eval_path=data/coco" if shots == 4 else "")
    data = f"""  source: coco                # COCO 2017 as downloaded: annotations/instances_{{train,val}}2017.json, train2017/, val2017/
  path: data/coco             # the COCO folder (or its instances_train2017.json); images from train2017/
  # eval: instances_val2017.json next to the train json, images from val2017/ (data.eval_path, data.eval_image_root){released}
  shots: {shots}                    # images per category, sampled with `seed`
  negatives: {shots}                # images without the category per category ("No Objects")"""
    return f"""# COCO few-shot detection, 8 categories, {shots}-shot, {label(size)} (Visual-RFT paper).
name: coco-8cat-{shots}shot{suffix(size)}
description: COCO 8-category {shots}-shot detection, {label(size)}, {method(size)}
data:
{data}
  task: detect
  categories: {yaml_list(COCO_8)}  # the paper's 8
  seed: 0                     # k-shot sampling seed

reward:
  iou_threshold: 0.5          # a prediction matches a box at IoU >= 0.5 (the paper)
  iou_denominator: max        # sum of matched IoUs / max(#gt, #pred): rewards recall too ("pred" = the paper's text)
  weights: {{format: 1.0, iou: 1.0, confidence: 1.0}}  # R = R_IoU + R_conf + R_format (the paper)
{common(size, 200, "the paper: 200 for few-shot detection", detection=True)}"""


def lvis_fewshot(size: str) -> str:
    return f"""# LVIS few-shot detection, 6 rare categories, 10-shot, {label(size)} (Visual-RFT paper).
name: lvis-rare6-10shot{suffix(size)}
description: LVIS 6 rare categories 10-shot detection, {label(size)}, {method(size)}
data:
  source: coco                # LVIS v1 uses the COCO instance format (images from COCO 2017)
  path: data/lvis/lvis_v1_train.json  # images (train2017/, val2017/ from each coco_url) found in data/coco, or data.image_root
  # eval: lvis_v1_val.json next to it (its images come from both train2017/ and val2017/)
  task: detect
  categories: {yaml_list(LVIS_RARE_6)}  # the paper's 6 rare
  shots: 10                   # images per category (the paper: about 10)
  negatives: 10               # images without the category per category
  seed: 0                     # k-shot sampling seed

reward:
  iou_threshold: 0.5          # match at IoU >= 0.5 (the paper)
  iou_denominator: max        # rewards recall too ("pred" = the paper's text)
  weights: {{format: 1.0, iou: 1.0, confidence: 1.0}}  # the paper
{common(size, 200, "the paper: 200 for few-shot detection", detection=True)}"""


def lisa(size: str) -> str:
    return f"""# LISA / ReasonSeg reasoning grounding, {label(size)} (Visual-RFT paper: 239 training images).
name: lisa-grounding{suffix(size)}
description: LISA reasoning grounding (239 images), {label(size)}, {method(size)}
data:
  source: reasonseg           # LISA's ReasonSeg as released: <id>.jpg + <id>.json (instructions, polygons; no boxes)
  path: data/reason_seg/ReasonSeg  # the folder holding train/ (239 images); Visual-RFT's lisa_train.json works too
  # box = bounds of the target polygons ('ignore' and 'flag' shapes left out); one record per instruction
  # eval: test/ (779 images), else val/ (200)
  task: ground

reward:
  ground_metric: iou          # IoU of the first box in [0, 1] ("giou" = (GIoU+1)/2)
  weights: {{format: 1.0, iou: 1.0}}  # R = IoU + format (the paper)
{common(size, 500, "the paper: 500 for LISA")}"""


def open_vocab(which: str, size: str) -> str:
    if which == "coco":
        head = "COCO open-vocabulary detection: train on 65 base classes, test on 15 novel"
        data = f"""  source: hub                 # Visual-RFT's released ViRFT_COCO_base65 (6k, 65 base classes)
  path: laolao77/ViRFT_COCO_base65
  eval_path: data/coco        # the COCO folder: annotations/instances_val2017.json, images from val2017/
  task: detect
  eval_categories: {yaml_list(COCO_NOVEL_15)}  # the paper's 15 novel"""
        name = "coco-ov-base65"
    else:
        head = "LVIS open-vocabulary detection: train on COCO base classes, test on 13 rare LVIS"
        data = f"""  source: hub                 # Visual-RFT's released ViRFT_COCO_base65 (the paper trains on COCO base)
  path: laolao77/ViRFT_COCO_base65
  eval_path: data/lvis/lvis_v1_val.json  # images (train2017/, val2017/) found in data/coco, or data.eval_image_root
  task: detect
  eval_categories: {yaml_list(LVIS_OV_13)}  # the paper's 13 rare"""
        name = "lvis-ov-rare13"
    return f"""# {head}, {label(size)} (Visual-RFT paper).
name: {name}{suffix(size)}
description: "{head}, {label(size)}"
data:
{data}
  seed: 0

reward:
  iou_threshold: 0.5          # match at IoU >= 0.5 (the paper)
  iou_denominator: max        # rewards recall too ("pred" = the paper's text)
  weights: {{format: 1.0, iou: 1.0, confidence: 1.0}}  # the paper
{common(size, 200, "as few-shot detection", detection=True)}"""


def all_presets() -> dict[str, str]:
    out: dict[str, str] = {}
    for ds in CLASSIFICATION:
        for k in SHOTS:
            out[f"{ds}-{k}shot"] = classification(ds, k, "2b")
    for size in ("2b", "7b"):
        sfx = "" if size == "2b" else "-7b"
        for k in SHOTS:
            out[f"coco-8cat-{k}shot{sfx}"] = coco_fewshot(k, size)
        out[f"lvis-rare6-10shot{sfx}"] = lvis_fewshot(size)
        out[f"lisa-grounding{sfx}"] = lisa(size)
        out[f"coco-ov-base65{sfx}"] = open_vocab("coco", size)
        out[f"lvis-ov-rare13{sfx}"] = open_vocab("lvis", size)
    for size in NEWER:  # the paper's headline settings on today's families
        out[f"flowers-1shot{suffix(size)}"] = classification("flowers", 1, size)
        out[f"coco-8cat-2shot{suffix(size)}"] = coco_fewshot(2, size)
        out[f"lisa-grounding{suffix(size)}"] = lisa(size)
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in all_presets().items():
        path = PRESETS / f"{name}.yaml"
        text = text.strip() + "\n"
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("out of date: " + ", ".join(stale) + " (run python tools/make_presets.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
