"""The pipeline's error types: a leaf module that imports nothing of the project.

Each one means a user can fix the cause; the runner reports it as one line and exits 2.
"""


class ConfigError(ValueError):
    """A setting in params.yaml is missing, unknown or invalid."""


class MissingSuiteError(ConfigError):
    """The data has no expectation suite yet: `pipeline validate --profile` derives one."""


class DataError(ValueError):
    """The data cannot be read or used as configured; the message says what to change."""


class StageError(RuntimeError):
    """A stage cannot go on; the message says why and what to do."""


USER_ERRORS = (ConfigError, DataError, StageError)
