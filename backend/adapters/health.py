"""Whether an outside system answers: an adapter tells its ``Health`` callback after
every call (True: it answered, even with a refusal; False: unreachable, timed out or a
5xx). The backend turns it into ``caas_backend_dependency_up{dependency}``."""

from __future__ import annotations

from collections.abc import Callable

Health = Callable[[bool], None]


def unobserved(up: bool) -> None:
    """The default: nobody is listening."""
