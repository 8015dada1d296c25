"""The one exception type users see as a one-line message (the CLI prints it and exits with 2)."""


class TltoolkitError(Exception):
    """Bad input or an unavailable resource: the message names the problem and the fix, on one line."""
