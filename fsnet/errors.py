"""The one exception type that user-facing code turns into a one-line error message."""


class FsnetError(Exception):
    """A problem the user can fix (bad path, bad file, bad option); CLIs print it as one line."""
