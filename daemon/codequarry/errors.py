"""Errors a user can act on. A leaf module: it imports nothing from the package.

Every error carries a one-line message meant for a human; the CLI prints it as is
and exits with `exit_code`, the MCP server returns it as a tool error.
"""


class CodequarryError(Exception):
    """Base class: a problem the user can fix; printed as one line, never a traceback."""

    exit_code = 1


class UsageError(CodequarryError):
    """The command line or a tool call asked for something impossible (exit code 2)."""

    exit_code = 2


class ConfigError(CodequarryError):
    """The config file is malformed or holds an invalid value."""

    exit_code = 2


class InvalidProjectId(UsageError):
    """A project id that does not match ^[a-z0-9-]{1,50}$ (no leading/trailing/double hyphen)."""


class UnknownProject(UsageError):
    """A project id that is not registered."""


class StoreUnavailable(CodequarryError):
    """The database cannot be reached or started."""


class EmbedderUnavailable(CodequarryError):
    """The embedding backend cannot be reached, timed out or answered with an error."""


class EmbedderMismatch(CodequarryError):
    """The embedding backend answered with vectors of the wrong shape."""


class ModelFileError(CodequarryError):
    """A local model file is missing or does not match its published checksum."""


class DaemonRunning(CodequarryError):
    """Another daemon already serves this data directory."""


class DaemonNotRunning(CodequarryError):
    """No daemon answers on the expected socket."""
