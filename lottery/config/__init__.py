"""Typed, validated configuration: the schema, step strings, and the error for bad input."""

from lottery.config.errors import ConfigError, Interrupted, RunError
from lottery.config.schema import (
    BranchConfig,
    Config,
    DatasetConfig,
    LoggerConfig,
    ModelConfig,
    OptimizerConfig,
    PruningConfig,
    TrainConfig,
    register,
)
from lottery.config.steps import Step, parse_cadence, to_iterations
from lottery.config.validate import validate

__all__ = [
    "BranchConfig",
    "Config",
    "ConfigError",
    "DatasetConfig",
    "Interrupted",
    "LoggerConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PruningConfig",
    "RunError",
    "Step",
    "TrainConfig",
    "parse_cadence",
    "register",
    "to_iterations",
    "validate",
]
