"""The error every dataset reader raises (its own module: the layout readers import it and each other)."""

from pipeline.core.errors import UserError


class DatasetError(UserError, ValueError):
    """The raw dataset is missing or does not follow its layout."""
