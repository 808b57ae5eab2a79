"""The run configuration: typed frozen sections (`sections.py`) and the files they come from
(`files.py`: presets, YAML, `--set` overrides). Everything a caller needs is importable from here."""

from visualrft_lite.config.files import (
    apply_overrides,
    config_from_dict,
    load_config,
    preset_description,
    preset_names,
    presets_dir,
    read_yaml,
    resolve_preset,
)
from visualrft_lite.config.sections import (
    SECTIONS,
    AlertsConfig,
    Config,
    DataConfig,
    EvalConfig,
    GRPOConfig,
    LoraConfig,
    ModelConfig,
    RolloutConfig,
    TrainConfig,
)
from visualrft_lite.config.resolve import resolve, with_model

__all__ = ["SECTIONS", "AlertsConfig", "Config", "DataConfig", "EvalConfig", "GRPOConfig", "LoraConfig", "ModelConfig",
           "RolloutConfig", "TrainConfig", "apply_overrides", "config_from_dict", "load_config", "preset_description",
           "preset_names", "presets_dir", "read_yaml", "resolve", "resolve_preset", "with_model"]
