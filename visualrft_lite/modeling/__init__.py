"""The only package that names transformers / peft / bitsandbytes classes.

load.py:  the base model (4-bit/8-bit/none), processor, LoRA adapters, device and dtype.
ops.py:   what the loop asks of a model: encode a prompt, prefill, decode a token,
          hidden states of completion positions, the adapters-disabled reference.
tiny.py:  the tiny random-weight Qwen2-VL (real architecture class) built locally.
tiny_families.py: the same for Qwen2.5-VL, Qwen3-VL, Qwen3.5 (and the MoE variants).
families.py: the supported model_types and each one's box convention and LoRA targets (pure).
processor_files.py: a checkpoint's processor as its files say (pixel limits, what the chat
          template's generation prompt writes) and the files merge copies.
"""
