"""The error every dataset reader raises (its own module: the layout readers import it and each other)."""

from pipeline.core.errors import UserError


class DatasetError(UserError, ValueError):
    """The raw dataset is missing or does not follow its layout. `problems`: each problem found, when
    a reader reports several at once (the message lists them)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]
