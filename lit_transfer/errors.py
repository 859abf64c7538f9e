"""One exception type for bad input: the CLI prints its message as a single line, no traceback."""


class TransferConfigError(ValueError):
    """A configuration, file or data problem the user can fix; the message names the problem and the fix."""
