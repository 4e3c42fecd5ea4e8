"""LLM-assisted moderation for marketplaces: items in, schema-valid policy verdicts out."""

from moderation.errors import BackendError, ConfigError, InputError, ModerationError, VerdictError

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ConfigError",
    "InputError",
    "ModerationError",
    "VerdictError",
    "__version__",
]
