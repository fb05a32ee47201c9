"""A transition's writes in as few round trips as the database allows.

This is the one place SQLite and PostgreSQL differ in how a consent transition
is written. The statements are the same on both; PostgreSQL runs them as one
statement (data-modifying CTEs), so a signup or a confirmation costs one
round trip besides its lookup, BEGIN and COMMIT. SQLite runs them one after
another in the same transaction.
"""

from __future__ import annotations

from typing import Any


def together(dialect: str, last: Any, *before: Any) -> tuple[Any, ...]:
    """The statements to execute, in order, with one shared parameter dict.

    ``before`` run first, ``last`` after them. Their bound parameter names must
    not clash (each statement's own prefix). Build the result once per dialect:
    compiling these statements costs more than running them.
    """
    if dialect != "postgresql":
        return (*before, last)
    return (last.add_cte(*(statement.cte(f"write_{i}") for i, statement in enumerate(before))),)

