"""ConfigError and the one line it says about a bad value."""

from __future__ import annotations

from collections.abc import Callable, Collection

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

# The error type of optin's own checks (see :func:`invalid`): their message is the whole story.
CUSTOM = "optin_setting"

# pydantic's own checks, said the way an operator reads them (after the variable's name).
_PHRASES = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be 0 or 1",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be a number above {gt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be {expected}",
}


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


def invalid(reason: str) -> PydanticCustomError:
    """What a validator raises: ``reason`` follows the variable's name (``must be …``)."""
    return PydanticCustomError(CUSTOM, "{reason}", {"reason": reason})


def config_error(error: ValidationError, variable: Callable[[str], str],
                 secret: Collection[str]) -> ConfigError:
    """The first problem of ``error`` in one line, naming the variable (``variable`` of the
    field's name); values of ``secret`` variables are not shown."""
    first = error.errors()[0]
    name = variable(str(first["loc"][0])) if first["loc"] else "configuration"
    return ConfigError(f"{name} {_reason(first, show_input=name not in secret)}")


def _reason(detail: ErrorDetails, *, show_input: bool) -> str:
    if detail["type"] == CUSTOM:
        return detail["msg"]
    phrase = _PHRASES.get(detail["type"])
    if phrase is None:
        return f"is not valid: {detail['msg']}"
    context = {k: _plain(v) for k, v in (detail.get("ctx") or {}).items()}
    reason = phrase.format(**context)
    return f"{reason}, got {detail['input']!r}" if show_input else reason


def _plain(value: object) -> str:
    """``0.0`` -> ``0``, ``'a' or 'b'`` -> ``a or b``: as the README writes values."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).replace("'", "")
