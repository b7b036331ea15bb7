"""Errors that fastforget raises on bad input: each message names the problem and the fix, on one line.

The CLI prints a `FastForgetError` as `error: MESSAGE` and exits 2; anything else is a bug in fastforget, shown as
one line that says how to see its traceback (`--debug` or FASTFORGET_DEBUG=1).
"""


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


class DataMismatchError(CheckpointError):
    """A checkpoint used with data other than the data it was trained on."""


class ConfigError(FastForgetError):
    """A config file, override or hyperparameter that cannot be applied."""


class ConfigValueError(ConfigError, ValueError):
    """A config value or hyperparameter of the wrong type or outside its range."""


class OutputError(FastForgetError):
    """An output path that cannot be written, or that holds something it would overwrite without `--overwrite`."""


class ResultsLockedError(OutputError):
    """Another live process is writing the same results file."""


class TrainingDivergedError(FastForgetError):
    """The loss became NaN or infinite."""


class GridIncompleteError(FastForgetError):
    """Some tasks of a benchmark grid failed; the others finished and are kept (failures.jsonl says which)."""


class DataError(FastForgetError):
    """User data (a Dataset, tensors) of a kind or shape fastforget cannot take."""


class ModelContractError(FastForgetError):
    """A method needs a part of the model (classifier, middle block) that is not there or cannot be found."""
