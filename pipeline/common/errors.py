"""The error types a user can cause; the CLI turns each into one line and exit status 1."""

import re


class HflpipeError(Exception):
    """A user-facing failure: the message names the input and the cause in one line."""


class InputError(HflpipeError):
    """A video, boxes file, intrinsics file or other input cannot be used."""


class ConfigError(HflpipeError):
    """A job spec or command-line option is invalid."""


class OutputError(HflpipeError):
    """The output directory cannot be written (permissions, disk full)."""


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s:@]+(:[^/\s@]*)?@")
_SECRET_PARAMS = re.compile(
    r"(?P<key>\b(?:token|password|passwd|secret|api[_-]?key|access[_-]?key)[A-Za-z_]*=)[^&\s'\"]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with credentials in URLs (``user:pass@``) and secret-looking parameters masked.

    Applied to everything hflpipe prints or logs: cluster addresses and storage URLs
    can carry tokens, and a one-line error echoes its input.
    """
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _SECRET_PARAMS.sub(r"\g<key>***", text)


def one_line(error: BaseException | str) -> str:
    """``error``'s text with every run of whitespace (newlines too) folded to one space.

    Messages end up in one-line CLI output and in single Parquet cells; an exception whose
    text is empty gives its type name, so the line never says nothing.
    """
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text
