"""Helpers for the attack scripts: the stack's URLs, the SMTP sink's mails, the database."""

from __future__ import annotations

import email
import email.policy
import quopri
import re
from pathlib import Path

import requests
import sqlalchemy as sa

WEB = f"http://127.0.0.1:{Path('/tmp/attack/web.port').read_text().strip()}"
DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test_review"
ADMIN = {"Authorization": "Bearer admin-token-0123456789abcdef0123456789"}
HOOK_SECRET = "webhook-secret-0123456789abcdef01234"
SMTP_LOG = Path("/tmp/attack/smtp.log")
SEP = "---------- MESSAGE FOLLOWS ----------"
engine = sa.create_engine(DB, pool_size=2)
http = requests.Session()


def mails() -> list[email.message.Message]:
    """Every mail the sink printed so far."""
    text = SMTP_LOG.read_text(errors="replace")
    out = []
    for chunk in text.split(SEP)[1:]:
        chunk = chunk.split("------------ END MESSAGE ------------")[0].lstrip("\n")
        out.append(email.message_from_string(chunk, policy=email.policy.default))
    return out


def links(msg: email.message.Message) -> list[str]:
    body = msg.get_body(("plain",))
    text = body.get_content() if body else ""
    return re.findall(r"http://127\.0\.0\.1:\d+/(?:confirm|unsubscribe)/[A-Za-z0-9._-]+", text)


def mails_to(addr: str) -> list[email.message.Message]:
    return [m for m in mails() if m["To"].addresses[0].addr_spec.lower() == addr.lower()]


def raw_mail_text() -> str:
    return quopri.decodestring(SMTP_LOG.read_bytes()).decode(errors="replace")


def signup(addr: str, ip: str | None = None, **extra: object) -> requests.Response:
    body = {"email": addr, "list": "newsletter", "consent_text_version": 1, "locale": "de"}
    body.update(extra)
    headers = {"X-Forwarded-For": ip} if ip else {}
    return http.post(WEB + "/v1/subscriptions", json=body, headers=headers, timeout=30)


def hook(fields: dict[str, str] | bytes, content_type: str | None = None) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return http.post(
        WEB + "/webhooks/activecampaign",
        params={"secret": HOOK_SECRET},
        data=fields,
        headers=headers,
        timeout=30,
    )


def status_of(addr: str) -> list[tuple]:
    with engine.connect() as c:
        return list(
            c.execute(
                sa.text(
                    "select id, status, email, withdrawn_at from subscription where lower(email)=lower(:e) "
                    "order by id"
                ),
                {"e": addr},
            )
        )


def proof(addr: str) -> dict:
    r = http.get(
        WEB + "/v1/contacts/proof", params={"email": addr, "list": "newsletter"}, headers=ADMIN, timeout=30
    )
    r.raise_for_status()
    return r.json()


#: Hostile values for webhook fields (form-encoded bytes), shared by fuzz.py and hookloss.py.
HOOK_VALUES = [
    b"a%00b",
    b"%FF",
    b"%ED%A0%80",
    b"x" * 100_000,
    b"99999999999999999999",
    b"0001-01-01T00:00:00%2B01:00",
    b"9999-12-31T23:59:59-01:00",
    b"-1",
    b"nan",
    b"2026-13-45",
    b"%1B%5B31m",
]
