"""vrft-lite: Visual-RFT (GRPO with verifiable visual rewards) on one consumer GPU."""

__version__ = "0.1.0"
