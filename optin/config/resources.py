"""Where the templates and migrations the package ships are found."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _resource_dir(name: str) -> Path:
    """Top-level ``templates/`` and ``migrations/``: in the checkout next to the
    package, in an installed wheel inside it (see pyproject's force-include)."""
    packaged = PACKAGE_DIR / name
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / name


TEMPLATE_DIR = _resource_dir("templates")
MIGRATIONS_DIR = _resource_dir("migrations")
