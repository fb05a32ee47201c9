"""The common-address shortcut of ``signup_address`` is exactly email-validator (issue 17).

Bulk imports check each address as a signup does; ``addresses._common_address``
answers the commonest shape itself (with email-validator's verdict on the domain,
cached). Here both paths meet hostile input: whatever the shortcut accepts must be
what email-validator accepts, in the same form, and everything else must get
email-validator's own verdict and message.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optin.consent import addresses
from optin.consent.addresses import InvalidAddress, signup_address


def _reference(raw: str, smtputf8: bool) -> str:
    """email-validator alone, as signup_address was before the shortcut."""
    return addresses._mailable(addresses._validated(raw, smtputf8=smtputf8, strict=True,
                                                    check_deliverability=False))


def _outcome(check, raw: str, smtputf8: bool) -> tuple[str, str]:
    try:
        return "ok", check(raw, smtputf8)
    except InvalidAddress as exc:
        return "refused", str(exc)


def _same(raw: str) -> None:
    for smtputf8 in (False, True):
        got = _outcome(lambda r, s: signup_address(r, smtputf8=s), raw, smtputf8)
        assert got == _outcome(_reference, raw, smtputf8), raw


HOSTILE = [
    "anna@example.org", " anna@example.org\n", "Anna.Muster@Example.ORG", "INFO@example.org",
    "Postmaster@example.org", "info.x@example.org", "a..b@example.org", ".a@example.org",
    "a.@example.org", "a@b@example.org", "@example.org", "anna@", "anna", "a@example",
    "a@example.org.", "a@.example.org", "a@example..org", "a@-example.org", "a@example-.org",
    "a@example.123", "a@localhost", "a@example.test", "a@example.local", "a@example.invalid",
    "a@xn--bcher-kva.example", "a@XN--BCHER-KVA.example", "a@xn--zz.example", "a@xn--.org",
    "a@bücher.example", "ä@example.org", '"a b"@example.org', '"a"@example.org',
    "Anna <a@example.org>", "<a@example.org>", "a@[127.0.0.1]", "a b@example.org",
    "a\u0338@example.org", "a@exa\u200bmple.org", "a\x00@example.org", "a@example.org\x00",
    "x" * 64 + "@example.org", "x" * 65 + "@example.org",
    "x" * 64 + "@" + ".".join(["a" * 63] * 3) + ".org",
    "x" * 10 + "@" + ".".join(["a" * 63] * 3) + ".org",
    "a@" + "a" * 64 + ".org", "a@" + ".".join(["b"] * 130), "a@example.o", "a@example.org-",
    "a!#$%&'*+/=?^_`{|}~-@example.org", "a@e_xample.org", "a@exämple.org", "a@ex\u0301ample.org",
    "a@EXAMPLE.ORG", "a@example.ORG", "a@ｅxample.org", "a@example。org", "a\\b@example.org",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_the_shortcut_agrees_with_email_validator_on_hostile_addresses(raw: str) -> None:
    _same(raw)


_LOCAL = st.text(alphabet="aZ9.-_+!'\"\\ @<>ä\u0338ß" + "x", max_size=70)
_DOMAIN = st.one_of(
    st.text(alphabet="aZ9.-_ä\u200b@[]", max_size=20),
    st.sampled_from(["example.org", "EXAMPLE.org", "xn--bcher-kva.example", "example.test",
                     "a" * 63 + ".org", ".".join(["a" * 63] * 3) + ".org"]))


@settings(max_examples=600, deadline=None)
@given(_LOCAL, st.sampled_from(["@", "@@", ""]), _DOMAIN)
def test_the_shortcut_agrees_with_email_validator_on_generated_addresses(
        local: str, at: str, domain: str) -> None:
    _same(local + at + domain)


def test_the_domain_is_checked_once_per_domain() -> None:
    addresses._common_domain.cache_clear()
    for i in range(50):
        signup_address(f"member{i}@once.example.org", smtputf8=False)
    info = addresses._common_domain.cache_info()
    assert (info.misses, info.hits) == (1, 49)
