"""Errors that fastforget raises on bad input: each message names the problem and the fix."""


class FastForgetError(Exception):
    """Base class: the CLI prints these without a traceback."""


class DataNotFoundError(FastForgetError):
    """A data set's files are not where they should be."""


class CorruptDataError(FastForgetError):
    """A data file exists but cannot be read as the expected format."""


class UnknownClassError(FastForgetError):
    """A class name or index that the data set does not have."""


class CheckpointError(FastForgetError):
    """A checkpoint that is missing, corrupt, or does not fit the model it is loaded into."""


class ConfigError(FastForgetError):
    """A config file or override that cannot be applied."""


class TrainingDivergedError(FastForgetError):
    """The loss became NaN or infinite."""
