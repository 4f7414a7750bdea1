"""Settings checks shared by the services' command lines (``python -m gateway``,
``backend``, ``paysim``): a misconfiguration is ONE line naming the variable or option,
exit code 2 (protocol/startup.py), never a traceback. The checks raise ``ConfigError``;
``problem_line`` also turns pydantic-settings' multi-line ``ValidationError`` into that one line."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError

from protocol.errors import ProtocolError

MIN_SECRET_CHARS = 16  # shared secrets and API keys: long enough not to be guessed


class ConfigError(ProtocolError, ValueError):
    """A setting that cannot be used; ``setting`` is the variable or option to fix."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


def required_secret(
    name: str, value: SecretStr | str | None, min_chars: int = MIN_SECRET_CHARS
) -> str:
    """The secret's value; ConfigError when it is missing or shorter than ``min_chars``
    (a short secret is refused rather than used: it is usually a placeholder)."""
    plain = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not plain:
        raise ConfigError(
            name, "not set (local stack: start the service with `python -m launcher run`)"
        )
    if len(plain) < min_chars:
        raise ConfigError(name, f"too short: at least {min_chars} characters")
    return plain


def http_url(name: str, value: str | None) -> str:
    """``value`` when it is an http(s) URL with a host; ConfigError otherwise."""
    if not value:
        raise ConfigError(name, "not set")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ConfigError(name, f"not a URL: {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"expected http(s)://host[:port][/path], not {value!r}")
    return value


def service_url(name: str, value: str | None, schemes: tuple[str, ...], form: str) -> str:
    """``value`` when it is a URL of one of ``schemes`` with a host (or a unix socket
    path) and a numeric port; ConfigError otherwise. The value is not quoted back: it
    may hold a password."""
    if not value:
        raise ConfigError(name, f"not set (expected {form})")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ConfigError(name, f"not a URL (expected {form})") from None
    if parts.scheme not in schemes:
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ConfigError(name, f"{shown} is not one of {', '.join(schemes)} (expected {form})")
    if not (parts.hostname or (parts.scheme == "unix" and parts.path)):
        raise ConfigError(name, f"no host (expected {form})")
    return value


def redis_url(name: str, value: str | None) -> str:
    """A Redis URL redis-py can open; ConfigError naming ``name`` otherwise."""
    form = "redis://[:password@]host[:port][/db], rediss://... or unix:///path"
    return service_url(name, value, ("redis", "rediss", "unix"), form)


def problem_line(exc: BaseException, env_prefix: str = "CAAS_") -> str:
    """One line saying what is wrong: for a pydantic-settings ValidationError the
    variable (``env_prefix`` + field name) and the first problem; otherwise the
    exception's first line."""
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else exc.title
        variable = f"{env_prefix}{field.upper()}"
        return f"{variable}: {first['msg']} (fix or unset {variable})"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
