"""Errors raised when a checkpoint or MANO file cannot be used."""


class ModelFileError(ValueError):
    """A checkpoint or MANO file is missing, corrupted, unsafe or of the wrong kind.

    The message is one line naming the file and the cause.
    """
