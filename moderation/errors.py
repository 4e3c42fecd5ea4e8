"""The exception family: one base, one subclass per stage that can fail."""


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
