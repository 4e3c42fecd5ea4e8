"""The exception family: one base, one subclass per stage that can fail; and the exit codes the
commands return for them."""

EXIT_OK = 0
EXIT_USAGE = 2  # bad options, config or input file: nothing was moderated
EXIT_BUDGET = 3  # stopped: too many rows became error records
EXIT_BACKEND = 4  # the model backend failed as a whole
EXIT_INTERRUPTED = 130


class ModerationError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(ModerationError):
    """A setting, file or option is wrong before any work starts."""


class InputError(ModerationError):
    """An input file cannot be read at all (missing, empty, unknown format)."""


class BackendError(ModerationError):
    """A model backend failed as a whole (engine crash, server unreachable)."""


class VerdictError(ModerationError):
    """A model output is not a valid verdict for its item."""

    def __init__(self, message: str, raw: str | None = None):
        super().__init__(message)
        self.raw = raw
