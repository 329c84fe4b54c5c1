"""The one error type for bad input: its message is a single line saying what and how to fix."""


class ConfigError(ValueError):
    """A bad configuration or missing input, detected before any training or writing."""


class RunError(RuntimeError):
    """A run that cannot go on (training diverged, the disk is full, ...): one line saying
    what happened, where, and what to do; what was already written stays intact."""


class Interrupted(RunError):
    """A run stopped by Ctrl-C (SIGINT) between two steps, its checkpoints kept: the command
    line exits 130 for it, and replicas stop the seeds still to run."""
