"""The error that the `videollm-mod` commands report as one line (the file, record, field or argument at fault)."""


class UserError(Exception):
    """A problem with what the user gave (a path, a file's contents, an option): reported without a traceback."""
