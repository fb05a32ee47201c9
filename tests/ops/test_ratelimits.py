"""Abuse limits (optin/limits.py): one IP hammering, one address targeted from many IPs,
a scanner opening links, the webhook, and counts shared between two hosts through Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from sqlalchemy import func, select

from optin import create_app
from optin.config import current_settings
from optin.consent.addresses import address_hash
from optin.extensions import db
from optin.models import ConsentEvent, OutboxItem, Subscription

from ..conftest import SECRET, FailingCommits, deliver, failing_commits, links, settle_intake

REDIS_URL = "redis://127.0.0.1:6379/1"  # this branch's own Redis database
#: Every test here counts requests up to a limit: each runs from a window's start.
pytestmark = pytest.mark.usefixtures("limit_window")


def _from(ip: str) -> dict[str, str]:
    """Headers of a request that reached the app through one proxy (OPTIN_TRUSTED_PROXIES=1)."""
    return {"X-Forwarded-For": ip, "User-Agent": "Mozilla/5.0 (limits test)"}


def _signup(client, address: str, ip: str, **headers: str):
    return client.post("/v1/subscriptions", json={
        "email": address, "list": "newsletter", "consent_text_version": 1,
    }, headers={**_from(ip), **headers})


def _mails_to(mailbox, address: str) -> int:
    """Mails received for the address, however its case was written in the form."""
    return sum(address.casefold() in str(m["To"]).casefold() for m in mailbox.messages)


def _count(app, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture
def app_config(app_config):
    app_config.update(OPTIN_TRUSTED_PROXIES="1", OPTIN_RATELIMIT_SIGNUP="3/minute",
                      OPTIN_RATELIMIT_LINKS="4/minute", OPTIN_RATELIMIT_WEBHOOK="2/minute",
                      OPTIN_MAILS_PER_ADDRESS_PER_DAY="2", OPTIN_RESEND_INTERVAL_MINUTES="0")
    return app_config


# --- one IP hammering the signup ----------------------------------------------------------


def test_one_ip_hammering_signup_gets_429_and_other_ips_do_not(app, client, newsletter):
    for i in range(3):
        assert _signup(client, f"reader{i}@example.org", "198.51.100.7").status_code == 202

    refused = _signup(client, "reader3@example.org", "198.51.100.7")
    assert refused.status_code == 429
    assert refused.mimetype == "application/problem+json"
    problem = refused.get_json()
    assert (problem["status"], problem["title"]) == (429, "Too Many Requests")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert f"{refused.headers['Retry-After']} seconds" in problem["detail"]
    # Nothing of the refused signup was stored.
    assert _count(app, Subscription, Subscription.email == "reader3@example.org") == 0

    # Another client IP (and the proxy's own address does not count) is not affected.
    assert _signup(client, "reader3@example.org", "198.51.100.8").status_code == 202
    assert _count(app, Subscription) == 4


def test_without_trusted_proxies_a_forged_forwarded_for_does_not_escape_the_limit(
        app_config, newsletter, app, client):
    app_config["OPTIN_TRUSTED_PROXIES"] = "0"
    direct = create_app(app_config).test_client()
    answers = [_signup(direct, f"r{i}@example.org", f"203.0.113.{i}").status_code for i in range(4)]
    assert answers == [202, 202, 202, 429]  # all from 127.0.0.1, whatever the header says


def test_ipv6_clients_are_counted_per_64_network(client, newsletter):
    def post(ip: str, n: int):
        return _signup(client, f"v6-{n}@example.org", ip)

    assert [post("2001:db8:1:2::1", 0).status_code, post("2001:db8:1:2::ffff", 1).status_code,
            post("2001:db8:1:2:abcd::9", 2).status_code] == [202, 202, 202]
    assert post("2001:db8:1:2::42", 3).status_code == 429  # same /64
    assert post("2001:db8:1:3::1", 4).status_code == 202  # the next /64


def test_a_browser_form_post_over_the_limit_gets_the_friendly_page(client, newsletter):
    form = {"email": "anna@example.org", "list": "newsletter", "consent_text_version": "1",
            "locale": "de"}
    headers = {**_from("198.51.100.9"), "Accept": "text/html,application/xhtml+xml;q=0.9"}
    for _ in range(3):
        assert client.post("/v1/subscriptions", data=form, headers=headers).status_code == 303
    page = client.post("/v1/subscriptions", data=form, headers=headers)
    assert page.status_code == 429
    assert page.mimetype == "text/html"
    assert int(page.headers["Retry-After"]) >= 1
    assert "Zu viele Versuche" in page.get_data(as_text=True)
    assert page.headers["Content-Language"] == "de"
    assert "Content-Security-Policy" in page.headers


def test_preflight_does_not_count_against_the_signup_limit(client, newsletter):
    for _ in range(5):
        client.options("/v1/subscriptions", headers={
            **_from("198.51.100.10"), "Origin": "https://www.example.com",
            "Access-Control-Request-Method": "POST"})
    assert _signup(client, "anna@example.org", "198.51.100.10").status_code == 202


# --- one address targeted from many IPs -------------------------------------------------------


def test_a_signup_that_was_not_saved_spends_nothing_of_the_address_budget(
        app, client, newsletter, mailbox):
    with failing_commits(FailingCommits(2), connections=True):
        for i in range(2):
            assert _signup(client, "victim@example.org", f"192.0.2.{i + 1}").status_code == 503
    assert _count(app, Subscription) == 0

    for i in range(3):  # the budget of 2 is whole: two mails, then capped
        assert _signup(client, "victim@example.org", f"192.0.2.{i + 10}").status_code == 202
        deliver(app)
    assert _mails_to(mailbox, "victim@example.org") == 2


def test_one_address_from_many_ips_gets_only_n_mails_and_identical_answers(
        app, client, newsletter, mailbox):
    answers = []
    for i, variant in enumerate(["victim@example.org", "Victim@example.org",
                                 "victim@EXAMPLE.org"] * 2):
        response = _signup(client, variant, f"192.0.2.{i + 1}")
        answers.append((response.status_code, response.get_data(), response.mimetype))
        deliver(app)
    assert len(set(answers)) == 1 and answers[0][0] == 202  # every answer identical

    assert _mails_to(mailbox, "victim@example.org") == 2  # OPTIN_MAILS_PER_ADDRESS_PER_DAY
    with app.app_context():
        actions = [e.details.get("action") for e in db.session.scalars(
            select(ConsentEvent).where(ConsentEvent.kind == "signup_repeated")
            .order_by(ConsentEvent.id))]
    assert actions == ["mail queued"] + ["mail capped (OPTIN_MAILS_PER_ADDRESS_PER_DAY)"] * 4

    # Another address is not affected.
    assert _signup(client, "other@example.org", "192.0.2.99").status_code == 202
    deliver(app)
    assert len(mailbox.to("other@example.org")) == 1


def test_form_posts_over_the_address_cap_redirect_like_any_other(app, client, newsletter, mailbox):
    form = {"email": "victim@example.org", "list": "newsletter", "consent_text_version": "1"}
    locations = {client.post("/v1/subscriptions", data=form, headers={
        **_from(f"192.0.2.{i + 1}"), "Accept": "text/html"}).headers["Location"] for i in range(4)}
    assert locations == {"https://www.example.com/danke"}
    deliver(app)
    assert len(mailbox.to("victim@example.org")) == 2


def test_the_expired_link_resend_counts_against_the_address_cap(app, client, newsletter, mailbox):
    assert _signup(client, "anna@example.org", "192.0.2.1").status_code == 202
    deliver(app)
    path = links(mailbox.to("anna@example.org")[-1])["confirm"]
    for i in range(3):  # the resend button: one mail left today, then nothing
        assert client.post(f"{path}/resend", headers=_from(f"192.0.2.{i + 10}")).status_code == 303
    deliver(app)
    assert len(mailbox.to("anna@example.org")) == 2


# --- a scanner opening links --------------------------------------------------------------------


def test_a_scanner_opening_links_gets_429_and_changes_nothing(app, client, newsletter, mailbox):
    assert _signup(client, "anna@example.org", "192.0.2.1").status_code == 202
    deliver(app)
    path = links(mailbox.to("anna@example.org")[-1])["confirm"]
    scanner = {**_from("203.0.113.66"), "Accept": "text/html"}

    for _ in range(3):
        assert client.get(path, headers=scanner).status_code == 200
    assert client.get("/unsubscribe/not-a-token", headers=scanner).status_code == 404
    page = client.get(path, headers=scanner)  # one budget for all link pages and buttons
    assert page.status_code == 429 and page.mimetype == "text/html"
    assert int(page.headers["Retry-After"]) >= 1
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "Too many attempts" in page.get_data(as_text=True)

    refused = client.post(path, headers=scanner)  # even the button, from that IP
    assert refused.status_code == 429
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        assert sub.status == "pending"
        assert _count(app, ConsentEvent, ConsentEvent.kind == "confirmed") == 0

    # The person, from their own IP, confirms with the same link.
    assert client.post(path, headers=_from("198.51.100.20")).status_code == 303
    assert _count(app, ConsentEvent, ConsentEvent.kind == "confirmed") == 1


LINK_OPERATIONS = [("get", "/confirm/{token}"), ("post", "/confirm/{token}"),
                   ("post", "/confirm/{token}/resend"), ("get", "/unsubscribe/{token}"),
                   ("post", "/unsubscribe/{token}")]


@pytest.mark.parametrize(("accept", "mimetype"), [
    ("text/html", "text/html"), (None, "text/html"), ("*/*", "text/html"),
    ("application/json", "application/problem+json"),
    ("application/problem+json", "application/problem+json"),
])
def test_a_link_over_the_limit_answers_as_the_client_asked_and_as_documented(
        client, newsletter, accept, mimetype):
    headers = {**_from("203.0.113.67"), **({"Accept": accept} if accept else {})}
    for _ in range(4):
        client.get("/unsubscribe/not-a-token", headers=headers)

    refused = client.get("/unsubscribe/not-a-token", headers=headers)

    assert refused.status_code == 429 and refused.mimetype == mimetype
    if mimetype != "text/html":
        assert refused.json["status"] == 429
    spec = client.get("/openapi.json").json
    for method, path in LINK_OPERATIONS:
        documented = spec["paths"][path][method]["responses"]["429"]["content"]
        assert set(documented) == {"text/html", "application/problem+json"}, (method, path)


# --- the webhook ----------------------------------------------------------------------------------


def test_the_webhook_is_limited_per_ip(app, client, newsletter):
    url = f"/webhooks/activecampaign?secret={app.extensions['optin.settings'].ac_webhook_secret}"
    body = {"type": "unsubscribe", "contact[email]": ""}
    assert [client.post(url, data=body, headers=_from("198.51.100.30")).status_code
            for _ in range(2)] == [200, 200]
    refused = client.post(url, data=body, headers=_from("198.51.100.30"))
    assert refused.status_code == 429
    assert refused.mimetype == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1
    assert client.post(url, data=body, headers=_from("198.51.100.31")).status_code == 200


# --- two hosts, one Redis -------------------------------------------------------------------------


@pytest.fixture
def shared_redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    client.flushdb()
    yield client
    client.flushdb()


def _second_host(app_config):
    """Another app instance on the same database: what a second host runs."""
    return create_app(app_config)


def test_two_hosts_sharing_redis_share_the_counts(shared_redis, app_config, newsletter, app,
                                                  mailbox):
    app_config["OPTIN_RATELIMIT_STORAGE_URL"] = REDIS_URL
    host_a, host_b = create_app(app_config), _second_host(app_config)
    a, b = host_a.test_client(), host_b.test_client()

    # Per IP: three signups allowed in all, wherever they land.
    assert _signup(a, "r1@example.org", "198.51.100.40").status_code == 202
    assert _signup(b, "r2@example.org", "198.51.100.40").status_code == 202
    assert _signup(a, "r3@example.org", "198.51.100.40").status_code == 202
    assert _signup(b, "r4@example.org", "198.51.100.40").status_code == 429

    # Per address: two mails in all, from any host and IP (each host's worker takes the
    # signups that host received).
    settle_intake(host_a)
    for i, (host, worker_app) in enumerate([(a, host_a), (b, host_b), (a, host_a), (b, host_b)]):
        assert _signup(host, "victim@example.org", f"192.0.2.{i + 1}").status_code == 202
        settle_intake(worker_app)
    assert _count(host_a, OutboxItem, OutboxItem.kind == "confirm_mail") == 3 + 2

    # The counters live in Redis under the keyed hash, never the address itself.
    keys = [k.decode() for k in shared_redis.scan_iter("*")]
    assert keys and not any("victim" in k for k in keys)
    with host_a.app_context():
        digest = address_hash("victim@example.org", current_settings().hash_key)
    assert any(digest in k for k in keys)
    assert any("198.51.100.40" in k for k in keys)


def test_two_hosts_with_memory_storage_count_separately(app_config, newsletter, app):
    """The control for the test above: without shared storage each host counts alone."""
    host_a, host_b = create_app(app_config), _second_host(app_config)
    a, b = host_a.test_client(), host_b.test_client()
    answers = [_signup(c, f"r{i}@example.org", "198.51.100.41").status_code
               for i, c in enumerate([a, a, a, b, b, b, a])]
    assert answers == [202] * 6 + [429]


def test_an_unreachable_redis_lets_signups_through(app_config, newsletter, app, mailbox, caplog):
    app_config["OPTIN_RATELIMIT_STORAGE_URL"] = "redis://127.0.0.1:1/0"  # nothing listens
    host = create_app(app_config)
    client = host.test_client()
    for i in range(4):
        assert _signup(client, "anna@example.org", f"192.0.2.{i}").status_code == 202
    deliver(host)
    assert len(mailbox.to("anna@example.org")) == 4  # no limit, but nothing lost
    assert "per-address mail limit unavailable" in caplog.text


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("OPTIN_RATELIMIT_SIGNUP", "lots"),
    ("OPTIN_RATELIMIT_LINKS", "10/fortnight"),
    ("OPTIN_RATELIMIT_WEBHOOK", "0/minute"),
    ("OPTIN_RATELIMIT_STORAGE_URL", "localhost:6379"),
    ("OPTIN_MAILS_PER_ADDRESS_PER_DAY", "0"),
])
def test_an_invalid_limit_stops_start_up_with_one_clear_line(tmp_path, name, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIN_")}
    env.update(OPTIN_DATABASE_URL=f"sqlite:///{tmp_path}/x.db", OPTIN_INSTANCE_PATH=str(tmp_path),
               OPTIN_SECRET_KEY=SECRET, PYTHONPATH=os.getcwd(), **{name: value})
    result = subprocess.run([sys.executable, "-m", "optin", "lists", "list"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"optin: configuration error: {name} must")
    assert value in lines[0] or "no scheme" in lines[0]


def test_each_app_counts_in_its_own_storage(app, client, newsletter, app_config):
    """Two apps in one process (two hosts without Redis): a second app's memory storage
    neither resets the first app's counts nor shares them."""
    for i in range(3):
        assert _signup(client, f"own{i}@example.org", "198.51.100.50").status_code == 202
    other = _second_host(dict(app_config)).test_client()
    assert _signup(client, "own3@example.org", "198.51.100.50").status_code == 429
    assert _signup(other, "own4@example.org", "198.51.100.50").status_code == 202


def test_two_hosts_sharing_redis_share_the_links_budget(shared_redis, app_config, newsletter):
    """The links budget (every link page and button, confirm's POST included) holds across
    hosts like the signup's: four in all from one IP, wherever they land."""
    app_config["OPTIN_RATELIMIT_STORAGE_URL"] = REDIS_URL
    a, b = create_app(app_config).test_client(), create_app(app_config).test_client()
    answers = [c.post("/confirm/not-a-token", headers=_from("198.51.100.42")).status_code
               for c in (a, b, a, b, a)]
    assert answers == [404] * 4 + [429]
    assert b.get("/unsubscribe/x", headers=_from("198.51.100.42")).status_code == 429
    assert a.get("/unsubscribe/x", headers=_from("198.51.100.43")).status_code == 404


def test_sentinels_that_cannot_be_reached_let_requests_through(app_config, newsletter, caplog):
    """A sentinel URL starts the app (it used to stop it: the signup limit handed it to a
    plain client), and sentinels out of reach let requests in, logged."""
    app_config["OPTIN_RATELIMIT_STORAGE_URL"] = "redis+sentinel://127.0.0.1:1/mymaster"
    client = create_app(app_config).test_client()
    assert _signup(client, "anna@example.org", "198.51.100.44").status_code == 202
    assert client.post("/confirm/x", headers=_from("198.51.100.44")).status_code == 404
    assert "signup rate limit unavailable" in caplog.text
    assert "links rate limit unavailable" in caplog.text
