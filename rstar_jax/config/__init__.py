"""Typed, layered configuration: schema, YAML loading, dotted overrides."""

from rstar_jax.config.loader import (
    ConfigError,
    apply_overrides,
    config_chain,
    from_dict,
    load_config,
    nearest_key,
    to_dict,
    to_yaml,
)
from rstar_jax.config.schema import (
    CheckpointConfig,
    Config,
    DataConfig,
    DistributedConfig,
    EngineConfig,
    EvalConfig,
    EvolveConfig,
    ExecutorConfig,
    LoggingConfig,
    MCTSConfig,
    MeshConfig,
    ModelConfig,
    OptimConfig,
    PPMConfig,
    TrainConfig,
)

__all__ = [
    "CheckpointConfig", "Config", "ConfigError", "DataConfig", "DistributedConfig",
    "EngineConfig", "EvalConfig", "EvolveConfig", "ExecutorConfig", "LoggingConfig",
    "MCTSConfig", "MeshConfig", "ModelConfig", "OptimConfig", "PPMConfig", "TrainConfig",
    "apply_overrides", "config_chain", "from_dict", "load_config", "nearest_key",
    "to_dict", "to_yaml",
]
