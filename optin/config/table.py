"""The README's Configuration table, made from the declaration in :mod:`optin.config.settings`."""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticUndefined

from optin.config.settings import declared

SEE_MEANING = "see meaning"


def default_text(default: Any) -> str:
    """A default as an operator would write the variable; computed ones are in the meaning."""
    if default is PydanticUndefined or default is None or default in ("", b""):
        return SEE_MEANING
    if isinstance(default, bool):
        return f"`{int(default)}`"
    return f"`{default}`"


def markdown_table() -> str:
    """``| variable | meaning | default |``, one row per variable, in declaration order."""
    rows = ["| variable | meaning | default |", "| --- | --- | --- |"]
    for name, info in declared().items():
        rows.append(f"| `{name}` | {info.description} | {default_text(info.default)} |")
    return "\n".join(rows)
