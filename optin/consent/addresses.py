"""Email addresses: validation, normalization and the keyed hash.

The keyed hash (HMAC-SHA256 with ``OPTIN_HASH_KEY``) identifies an address
without storing it: it is what suppression and minimized records keep. Without
the key nobody can test a dictionary of addresses against it.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from optin.ops.pseudonyms import keyed_hash


class InvalidAddress(ValueError):
    """The address is not one we can mail; the message is safe to show."""


def normalize_email(raw: str, *, check_deliverability: bool = False) -> str:
    """The address in the form we store and mail to (Unicode domain normalized)."""
    try:
        result = validate_email(raw.strip(), check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    return result.normalized


def address_hash(email: str, key: bytes) -> str:
    """Keyed hash of an address, case-insensitive so case variants are one person."""
    return keyed_hash(email, key)
