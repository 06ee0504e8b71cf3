"""The one exception family of oceanda.

The CLI prints an :class:`OceandaError` on one line (no traceback) and exits with code 2;
anything else is a bug and keeps its traceback.
"""


class OceandaError(Exception):
    """Base class of every error oceanda raises on purpose (bad input, refused action)."""


class DataValidationError(OceandaError):
    """An input file or Dataset does not have the layout oceanda expects."""


class GridMismatchError(DataValidationError):
    """Two grids that must agree (state/obs, data/model) do not."""


class OutputExistsError(OceandaError):
    """An output exists already and ``overwrite`` was not given."""


class CheckpointError(OceandaError):
    """A model checkpoint is missing, malformed or incompatible."""


class ConfigurationError(OceandaError, ValueError):
    """A setting (an option, a settings field, a checkpoint's stored setting) is outside its allowed range."""


class OutputError(OceandaError):
    """An output cannot be written: permission, read-only or full file system, a path that cannot exist."""
