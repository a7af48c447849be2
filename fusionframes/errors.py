"""Errors a user can cause. Each message says what was wrong and what to do about it."""


class FusionFramesError(Exception):
    """Base of every error this package raises on purpose."""


class CheckpointError(FusionFramesError):
    """A model file is missing, unreadable, of the wrong kind, or does not match its configuration."""


class ConfigError(FusionFramesError):
    """A model configuration (configs.json or a built-in default) is malformed or unknown."""


class InputError(FusionFramesError):
    """A call argument is out of range: sizes, frame counts, guidance values, prompts."""


class OutOfMemory(FusionFramesError):
    """The device ran out of memory; the message names the settings that reduce what a stage needs."""
