"""The one error type for bad input: its message is a single line saying what and how to fix."""


class ConfigError(ValueError):
    """A bad configuration or missing input, detected before any training or writing."""
