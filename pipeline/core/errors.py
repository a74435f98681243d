"""The project's own errors: what a user can fix (a params value, a dataset, a file).

Every stage's entry point (`runtime.entry_point`) prints a `UserError` as one line on stderr and exits
with code 2; `MMDISTILL_DEBUG=1` (or `--debug`) shows its traceback. Any other exception is a bug or an
environment failure and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user fixes in their params, data or files; its message names which and how."""


class MissingInput(UserError, FileNotFoundError):
    """A file a stage or command reads does not exist; the message names it and the stage that writes it."""
