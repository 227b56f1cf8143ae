"""The one exception type that user-facing code turns into a one-line error message."""


class FsnetError(Exception):
    """A problem the user can fix (bad path, bad file, bad option); CLIs print it as one line."""


def fsnet_cause(exc: BaseException | None) -> FsnetError | None:
    """The FsnetError in ``exc``'s chain of causes (Hydra and OmegaConf wrap the ones raised in
    instantiated targets and resolvers, OmegaConf even with ``from None``, hence ``__context__``
    regardless), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, FsnetError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
