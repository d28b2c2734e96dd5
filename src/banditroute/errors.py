"""The exception hierarchy of banditroute.

Every error raised on purpose by the package derives from ``BanditRouteError`` so that
callers (the CLI, the service) can map the whole family to messages or status codes in
one place.
"""


class BanditRouteError(Exception):
    """Base class of every error raised on purpose by banditroute."""


class ConfigError(BanditRouteError):
    """A setting, catalog entry or command-line value is invalid."""


class LogFormatError(BanditRouteError):
    """A routing log cannot be read: unknown format, missing column or invalid value."""


class EmptyPromptError(BanditRouteError, ValueError):
    """A prompt to embed is empty or contains only whitespace."""


class InvalidTextError(BanditRouteError, ValueError):
    """A text contains a lone UTF-16 surrogate, which no UTF-8 text can hold."""


class UnknownModelError(BanditRouteError, KeyError):
    """A model name is not in the catalog."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a plain message reads better.
        return str(self.args[0]) if self.args else ""
