"""Secrets a development instance makes for itself, once, in its instance folder."""

from __future__ import annotations

import secrets
from pathlib import Path


def instance_secret(instance_path: Path, name: str) -> str:
    """The random value kept in ``instance_path / name``, made on first use.

    Kept, so that links (the secret key) and scripts (the operator token)
    survive a restart; readable by its owner only.
    """
    path = instance_path / name
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    return value
