"""The keyed hash that stands for an address or an IP where the value itself must not be.

HMAC-SHA256 with ``OPTIN_HASH_KEY`` over the value's :func:`identity`, so two
spellings of one mailbox (or one IP) are one person and two mailboxes never
are. It is both the ``email_hash`` suppression and minimized records keep
(``consent.addresses``) and, cut short, the pseudonym in log lines
(``ops.logs``), so a log line can be traced to its row. It sits this low so
that logging needs nothing of the consent layer.
"""

from __future__ import annotations

import hashlib
import hmac

import idna

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def keyed_hash(value: str, key: bytes) -> str:
    """The keyed hash of ``value`` (an address or an IP), as 64 hex digits."""
    return hmac.new(key, identity(value).encode(), hashlib.sha256).hexdigest()


def identity(value: str) -> str:
    """What tells one mailbox (or IP) from another: the text the keyed hash covers.

    - An address: the local part with its ASCII letters lower-cased and every other
      character kept (mailbox providers ignore ASCII case by common convention;
      ``straße`` and ``strasse``, or ``Ö`` and ``ö``, may be different mailboxes, so
      nothing else is folded), and the domain (case-insensitive by DNS) in its
      Unicode form, so ``bücher.example`` and ``xn--bcher-kva.example`` are one domain.
    - Anything else (an IP): case-folded, as it always was.

    Until issue 13 the whole value was case-folded (``str.casefold``). For an ASCII
    address that is the same text, so every hash stored for one still matches, and
    so does an IDN domain's (its Unicode form is lower case already). Only where
    ``casefold`` changed a non-ASCII character (``ß`` -> ``ss``, ``Ö`` -> ``ö``,
    full-width capitals, ``ς``, ligatures) does a stored hash differ from the new
    one: migration ``0002`` recomputes those from the address where the row still
    holds it; a minimized row (hash only) keeps its old hash, which the address no
    longer matches.
    """
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if not at:
        return value.casefold()
    return f"{local.translate(_ASCII_LOWER)}@{_domain(domain)}"


def _domain(domain: str) -> str:
    """The domain in Unicode (U-labels), lower case; left lower-cased if it is no IDN name."""
    if domain.isascii() and "xn--" not in domain.lower():
        return domain.lower()
    try:
        return idna.decode(domain, uts46=True)
    except (idna.IDNAError, UnicodeError):
        return domain.lower()
