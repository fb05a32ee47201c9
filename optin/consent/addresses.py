"""Email addresses: validation, the form we store and mail to, and the keyed hash.

The stored form is the *mailable* one: the local part as entered (Unicode NFC,
case kept; RFC 2142 role names such as ``info`` lower-cased by email-validator)
and the domain in ASCII (IDNA A-labels, lower case), so ``anna@Bücher.example``
and ``anna@xn--bcher-kva.example`` are both stored, shown and mailed as
``anna@xn--bcher-kva.example``. The signup's ledger event keeps the address as
entered (``email_entered``) when it differs, and the proof shows that.

A local part that is not ASCII can only be mailed with SMTPUTF8 (RFC 6531):
``OPTIN_SMTPUTF8=refuse`` (the default) refuses such an address at signup,
``when_offered`` accepts it and the mailer uses SMTPUTF8 (a relay that does not
offer it makes that mail a dead letter).

The keyed hash (HMAC-SHA256 with ``OPTIN_HASH_KEY``) identifies an address
without storing it: it is what suppression and minimized records keep. Without
the key nobody can test a dictionary of addresses against it. What counts as the
same address is :func:`optin.ops.pseudonyms.identity`.
"""

from __future__ import annotations

import functools

from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DOT_ATOM_TEXT,
    EMAIL_MAX_LENGTH,
    LOCAL_PART_MAX_LENGTH,
)

from optin.ops.pseudonyms import keyed_hash

#: ``OPTIN_SMTPUTF8``: what a non-ASCII local part gets (parsed in ``config``).
SMTPUTF8_REFUSE, SMTPUTF8_WHEN_OFFERED = "refuse", "when_offered"


class InvalidAddress(ValueError):
    """The address is not one we can mail; the message is safe to show."""


def signup_address(raw: str, *, smtputf8: bool, check_deliverability: bool = False) -> str:
    """The address a signup entered, checked, in the form we store and mail to (see above).

    ``smtputf8=False`` (``OPTIN_SMTPUTF8=refuse``) refuses a local part that is not
    ASCII. ``strict`` makes email-validator hold the local part to RFC 5321's 64
    characters, which it checks only in strict mode.
    """
    if not check_deliverability:
        common = _common_address(raw.strip())
        if common is not None:
            return common
    return _mailable(_validated(raw, smtputf8=smtputf8, strict=True,
                                check_deliverability=check_deliverability))


def normalize_email(raw: str) -> str:
    """An address to look up (operator, webhook, reconcile), in the stored form.

    As lenient as the stored rows may be (a non-ASCII local part, one over 64 characters
    accepted before issue 13), so that whatever is stored can be found, and erased.
    """
    return _mailable(_validated(raw, smtputf8=True, strict=False, check_deliverability=False))


def mailable(stored: str) -> str:
    """A stored address in the form the relay gets: the domain in ASCII (rows stored before
    issue 13 may hold it in Unicode)."""
    return normalize_email(stored)


def needs_smtputf8(address: str) -> bool:
    """Whether the relay must speak SMTPUTF8 to take mail for ``address``."""
    return not address.rpartition("@")[0].isascii()


def address_hash(email: str, key: bytes) -> str:
    """Keyed hash of an address: one per mailbox, whatever the ASCII case or domain form."""
    return keyed_hash(email, key)


def _validated(raw: str, *, smtputf8: bool, strict: bool,
               check_deliverability: bool) -> ValidatedEmail:
    try:
        return validate_email(raw.strip(), allow_smtputf8=smtputf8, strict=strict,
                              check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None


_ASCII_HOST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


def _common_address(text: str) -> str | None:
    """The stored form of the commonest shape of address, or None for any other shape.

    Written by hand for bulk imports, where email-validator's full check cost more than
    everything else a row needs (90 µs, most of it in the domain's IDNA and Unicode
    checks, the same for every row of one domain). The shape: one ``@``, an ASCII
    dot-atom local part (email-validator's own pattern) within 64 characters that is
    not an RFC 2142 role name (those are lower-cased), and a domain of ASCII letters,
    digits, dots and hyphens. For it, email-validator's answer is the local part as
    given plus the domain's answer, and that is asked of email-validator once per
    domain (cached). Every other address, and every address this path would refuse,
    goes through email-validator whole, so its verdict and its message are the
    library's. tests/consent/test_addresses.py checks both paths agree on hostile input.
    """
    local, at, domain = text.partition("@")
    if (not at or "@" in domain or not domain or len(local) > LOCAL_PART_MAX_LENGTH
            or not DOT_ATOM_TEXT.match(local) or not _ASCII_HOST.issuperset(domain)
            or local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES):
        return None
    ascii_domain = _common_domain(domain)
    if ascii_domain is None:
        return None
    limit = EMAIL_MAX_LENGTH - len(local) - 1  # every form of the address is this long
    if len(domain) > limit or len(ascii_domain[0]) > limit or ascii_domain[1] > limit:
        return None
    return f"{local}@{ascii_domain[0]}"


@functools.lru_cache(maxsize=4096)
def _common_domain(domain: str) -> tuple[str, int] | None:
    """email-validator's ASCII form of ``domain`` and the UTF-8 length of its normalized
    (Unicode) form, asked with a plain local part; None if it refuses the domain."""
    try:
        result = validate_email(f"a@{domain}", allow_smtputf8=False, strict=True,
                                check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.ascii_domain, len(result.domain.encode())


def _mailable(result: ValidatedEmail) -> str:
    return f"{result.local_part}@{result.ascii_domain}"
