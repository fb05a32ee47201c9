"""Signed links: confirm and unsubscribe, one salt per purpose.

A token carries the subscription id and its nonce. The nonce is replaced when
consent is withdrawn, so a confirmation link found in an old mail can never
re-confirm a withdrawn subscription. A confirmation link also names the signup
it was mailed for (its ledger ``seq``, see ``consent.signups``), so it confirms
that signup and no later one; links made before carry no signup and still work. Confirmation links expire
(``OPTIN_CONFIRM_TTL_HOURS``); unsubscribe links never do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

CONFIRM = "optin.confirm"
UNSUBSCRIBE = "optin.unsubscribe"


class TokenInvalid(Exception):
    """Tampered, truncated, or signed for another purpose."""


class TokenExpired(Exception):
    """Genuine but too old; carries what it pointed to so a fresh mail can be offered."""

    def __init__(self, data: TokenData) -> None:
        super().__init__("link expired")
        self.data = data


@dataclass(frozen=True)
class TokenData:
    subscription_id: int
    nonce: str
    signup_seq: int | None = None  # the signup a confirmation link was mailed for


@functools.lru_cache(maxsize=8)
def _serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    """Built once per key and purpose (a serializer keeps no state between calls): building
    it was a third of reading a token."""
    return URLSafeTimedSerializer(secret_key, salt=purpose)


def make_token(secret_key: str, purpose: str, subscription_id: int, nonce: str,
               signup_seq: int | None = None) -> str:
    payload: list[int | str] = [subscription_id, nonce]
    if signup_seq is not None:
        payload.append(signup_seq)
    return _serializer(secret_key, purpose).dumps(payload)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse(payload: object) -> TokenData:
    if (
        not isinstance(payload, list)
        or len(payload) not in (2, 3)
        or not _is_int(payload[0])
        or not isinstance(payload[1], str)
        or (len(payload) == 3 and not _is_int(payload[2]))
    ):
        raise TokenInvalid("unexpected payload")
    return TokenData(payload[0], payload[1], payload[2] if len(payload) == 3 else None)


def read_token(
    secret_key: str, purpose: str, token: str, max_age_seconds: int | None = None
) -> TokenData:
    """Verify a token; raise :class:`TokenExpired` or :class:`TokenInvalid`."""
    serializer = _serializer(secret_key, purpose)
    try:
        return _parse(serializer.loads(token, max_age=max_age_seconds))
    except SignatureExpired as exc:
        # The signature was valid, only the age is wrong: the payload is trustworthy.
        if exc.payload is None:
            raise TokenInvalid("no payload") from None
        try:
            data = _parse(serializer.load_payload(exc.payload))
        except BadData:
            raise TokenInvalid("bad payload") from None
        raise TokenExpired(data) from None
    except BadData:
        raise TokenInvalid("bad signature") from None
