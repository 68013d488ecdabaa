"""Errors slimbench raises for bad input; each message names the problem and the fix."""


class SlimbenchError(Exception):
    """Base class: the CLI prints these as one line and exits with status 2."""


class UnknownNameError(SlimbenchError, KeyError):
    """A registry lookup with a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class IntegrityError(SlimbenchError):
    """A data file or checkpoint is missing or its md5 does not match."""


class BudgetError(SlimbenchError, ValueError):
    """A budget that means nothing (negative, sparsity >= 1, unknown kind)."""


class ConfigError(SlimbenchError, ValueError):
    """A malformed params.yaml entry or case definition."""


class DiskFullError(SlimbenchError, OSError):
    """No space left for a write; nothing was half-written."""
