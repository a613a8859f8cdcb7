"""The error types a user can cause; the CLI turns each into one line and exit status 1."""


class HflpipeError(Exception):
    """A user-facing failure: the message names the input and the cause in one line."""


class InputError(HflpipeError):
    """A video, boxes file, intrinsics file or other input cannot be used."""


class ConfigError(HflpipeError):
    """A job spec or command-line option is invalid."""


class OutputError(HflpipeError):
    """The output directory cannot be written (permissions, disk full)."""
