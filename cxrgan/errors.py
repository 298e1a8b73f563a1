"""The one user-facing error type: the CLI prints its message without a traceback."""


class CxrganError(Exception):
    """Bad input or configuration; the message names the file, row or value at fault."""


class RankAgreedError(CxrganError):
    """A user error raised alike on every process of a torchrun job; only rank 0 prints it."""
