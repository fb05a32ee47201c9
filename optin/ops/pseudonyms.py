"""The keyed hash that stands for an address or an IP where the value itself must not be.

HMAC-SHA256 with ``OPTIN_HASH_KEY``, case-insensitive so case variants are one
person. It is both the ``email_hash`` suppression and minimized records keep
(``consent.addresses``) and, cut short, the pseudonym in log lines
(``ops.logs``), so a log line can be traced to its row. It sits this low so
that logging needs nothing of the consent layer.
"""

from __future__ import annotations

import hashlib
import hmac


def keyed_hash(value: str, key: bytes) -> str:
    """The keyed hash of ``value`` (an address or an IP), as 64 hex digits."""
    return hmac.new(key, value.strip().casefold().encode(), hashlib.sha256).hexdigest()
