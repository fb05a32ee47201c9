"""The ActiveCampaign client against a real local HTTP server that acts like ActiveCampaign."""

from __future__ import annotations

import logging
import socket
import time
import traceback
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote

import pytest

from optin.activecampaign import sync
from optin.activecampaign.client import (
    ActiveCampaignClient,
    ActiveCampaignError,
    AuthError,
    PermanentError,
    RateLimited,
    TransientError,
    parse_retry_after,
)

ADA = "ada@example.org"


@pytest.fixture
def ac_client(fake_ac):
    with ActiveCampaignClient(fake_ac.url, fake_ac.api_key, timeout=(1, 2)) as c:
        yield c


# -- contacts and list statuses ---------------------------------------------------


def test_sync_creates_then_updates_the_same_contact(fake_ac, ac_client):
    created = ac_client.sync_contact(ADA, first_name="Ada")
    updated = ac_client.sync_contact("Ada@Example.org", last_name="Lovelace",
                                  field_values={3: "de", "7": "web"})

    assert created["id"] == updated["id"]
    assert fake_ac.contact_count == 1
    stored = fake_ac.contact(ADA)
    assert (stored["firstName"], stored["lastName"]) == ("Ada", "Lovelace")  # None kept the name
    assert stored["fieldValues"] == {"3": "de", "7": "web"}
    first, second = fake_ac.requests_to("POST", "contact/sync")
    assert first.json == {"contact": {"email": ADA, "firstName": "Ada"}}
    assert second.json["contact"]["fieldValues"] == [
        {"field": "3", "value": "de"}, {"field": "7", "value": "web"}]


def test_list_status_subscribe_then_unsubscribe(fake_ac, ac_client):
    contact = ac_client.sync_contact(ADA)

    subscribed = ac_client.set_list_status(contact["id"], 1, 1)
    assert fake_ac.contact_status(ADA, 1) == 1
    unsubscribed = ac_client.set_list_status(contact["id"], 1, 2)

    assert fake_ac.contact_status(ADA, 1) == 2
    assert int(subscribed["status"]) == 1 and int(unsubscribed["status"]) == 2
    assert fake_ac.requests_to("POST", "contactLists")[-1].json == {
        "contactList": {"list": 1, "contact": contact["id"], "status": 2}}
    with pytest.raises(ValueError):
        ac_client.set_list_status(contact["id"], 1, 0)


def test_find_contact_by_email(fake_ac, ac_client):
    contact_id = fake_ac.add_contact(ADA, 1)

    assert ac_client.find_contact("ADA@example.org")["id"] == contact_id
    assert ac_client.find_contact("nobody@example.org") is None
    assert fake_ac.requests_to("GET", "contacts")[0].query == {"email": ["ADA@example.org"]}


def test_list_members_pages_past_100_with_each_contacts_status_on_that_list(fake_ac, ac_client):
    for i in range(150):
        fake_ac.add_contact(f"m{i:03}@example.org", 1, status=2 if i % 10 == 0 else 1)
    fake_ac.add_contact("m001@example.org", 2, status=2)  # another list's status must not leak in
    fake_ac.add_contact("outsider@example.org", 2, status=1)

    members = list(ac_client.list_members(1))

    assert len(members) == 150 and len({m["id"] for m in members}) == 150
    statuses = {m["email"]: m["listStatus"] for m in members}
    assert statuses["m000@example.org"] == 2 and statuses["m001@example.org"] == 1
    assert sum(1 for s in statuses.values() if s == 2) == 15
    assert members[0]["contactList"]["list"] == "1"
    pages = fake_ac.requests_to("GET", "contacts")
    assert [p.query["offset"] for p in pages] == [["0"], ["100"]]
    assert pages[0].query["include"] == ["contactLists"] and pages[0].query["limit"] == ["100"]

    unsubscribed = list(ac_client.list_members(1, status=2, page_size=10))
    assert len(unsubscribed) == 15 and {m["listStatus"] for m in unsubscribed} == {2}


def test_lists_and_get_list(ac_client):
    assert ac_client.get_list(1)["name"] == "Newsletter"
    assert ac_client.get_list(999) is None
    assert [x["id"] for x in ac_client.lists()] == ["1", "2"]


def test_base_url_may_already_end_in_api_3(fake_ac):
    for url in (fake_ac.url + "/api/3", fake_ac.url + "/api/3/", fake_ac.url + "/"):
        with ActiveCampaignClient(url, fake_ac.api_key) as c:
            assert c.get_list(2)["name"] == "Product news"
    with pytest.raises(ValueError):
        ActiveCampaignClient("acct.api-us1.com", "key")


# -- bulk import --------------------------------------------------------------------


def test_bulk_import_sends_snake_case_and_is_applied(fake_ac, ac_client):
    fake_ac.add_contact("gone@example.org", 1, status=2)  # unsubscribed inside ActiveCampaign
    contacts = [
        {"email": ADA, "first_name": "Ada", "last_name": "Lovelace",
         "subscribe": [{"listid": 1}], "fields": [{"id": 3, "value": "de"}]},
        {"email": "bob@example.org", "unsubscribe": [{"listid": 2}]},
        {"email": "gone@example.org", "subscribe": [{"listid": 1}]},
    ]

    result = ac_client.bulk_import(contacts)

    assert result["success"] == 1 and result["queued_contacts"] == 3 and result["batchId"]
    assert fake_ac.requests_to("POST", "import/bulk_import")[0].json == {"contacts": contacts}
    assert fake_ac.contact_status(ADA, 1) == 1
    assert fake_ac.contact(ADA)["fieldValues"] == {"3": "de"}
    assert fake_ac.contact_status("bob@example.org", 2) == 2
    assert fake_ac.contact_status("gone@example.org", 1) == 2  # an import never re-subscribes
    info = ac_client.bulk_import_info(result["batchId"])
    assert info["status"] == "completed" and len(info["success"]) == 3


def test_bulk_import_limit_is_checked_before_sending(fake_ac, ac_client):
    with pytest.raises(ValueError, match="250"):
        ac_client.bulk_import([{"email": f"c{i}@example.org"} for i in range(251)])
    with pytest.raises(ValueError):
        ac_client.bulk_import([])
    assert fake_ac.requests == []
    assert ac_client.bulk_import([{"email": f"c{i}@example.org"} for i in range(250)])["batchId"]


def test_bulk_import_failure_reasons_are_permanent(ac_client):
    with pytest.raises(PermanentError) as info:
        ac_client.bulk_import([{"email": ADA}, {"email": "not-an-address"}])
    assert info.value.status == 400
    assert "did not pass validation" in info.value.title
    assert "contact 1: Field 'email' incorrect format" in info.value.detail


def test_bulk_import_rate_limit_400_is_rate_limited(fake_ac, ac_client):
    fake_ac.bulk_imports_per_minute = 1
    ac_client.bulk_import([{"email": ADA}])
    with pytest.raises(RateLimited) as info:
        ac_client.bulk_import([{"email": ADA}])
    assert info.value.status == 400 and info.value.retry_after == 60.0


# -- failures -----------------------------------------------------------------------


def test_429_raises_rate_limited_with_retry_after(fake_ac, ac_client):
    with pytest.raises(RateLimited) as info:
        for _ in range(50):  # 5 a second are allowed; the 6th within the second is refused
            ac_client.get_list(1)
    assert info.value.status == 429 and 0 < info.value.retry_after <= 1
    assert isinstance(info.value, TransientError)
    assert fake_ac.rate_limited == 1


def test_retry_after_as_http_date(fake_ac, ac_client):
    when = datetime.now(UTC) + timedelta(seconds=30)
    fake_ac.fail_next(1, 429, retry_after=format_datetime(when, usegmt=True))
    with pytest.raises(RateLimited) as info:
        ac_client.get_list(1)
    assert 25 <= info.value.retry_after <= 30
    assert parse_retry_after("7") == 7.0 and parse_retry_after("soon") is None


def test_the_apps_shared_throttle_keeps_under_the_limit(ac_app, fake_ac):
    """The client the app builds, with its real throttle (OPTIN_AC_RATE_LIMIT, 4 a second):
    unpaced, the sixth call within a second would be refused (see above)."""
    with ac_app.app_context():
        ac = sync.client()
        assert ac is not None
        started = time.monotonic()
        for _ in range(7):
            ac.get_list(1)
        elapsed = time.monotonic() - started
    assert fake_ac.rate_limited == 0
    assert elapsed >= 6 * 0.25 - 0.05  # seven calls, a quarter of a second apart


def test_503_and_5xx_are_transient(fake_ac, ac_client):
    fake_ac.outage = True
    with pytest.raises(TransientError) as info:
        ac_client.find_contact(ADA)
    assert info.value.status == 503 and not isinstance(info.value, RateLimited)
    fake_ac.outage = False
    fake_ac.fail_next(1, 500)
    with pytest.raises(TransientError):
        ac_client.get_list(1)
    assert ac_client.get_list(1)["id"] == "1"


def test_timeout_is_transient(fake_ac):
    fake_ac.delay = 0.5
    with (
        ActiveCampaignClient(fake_ac.url, fake_ac.api_key, timeout=(1, 0.2)) as c,
        pytest.raises(TransientError, match="timed out") as info,
    ):
        c.sync_contact(ADA)
    assert info.value.status is None


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_connection_refused_is_transient():
    with (
        ActiveCampaignClient(_closed_port_url(), "k", timeout=(0.5, 0.5)) as c,
        pytest.raises(TransientError),
    ):
        c.get_list(1)


def test_422_is_permanent_with_activecampaigns_title_and_code(fake_ac, ac_client):
    with pytest.raises(PermanentError) as info:
        ac_client.sync_contact("not-an-address")
    error = info.value
    assert (error.status, error.code) == (422, "email_invalid")
    assert error.title == "Contact Email Address is not valid."
    assert "Contact Email Address is not valid." in str(error)

    contact = ac_client.sync_contact(ADA)
    with pytest.raises(PermanentError) as info:
        ac_client.set_list_status(contact["id"], 99, 1)
    assert info.value.code == "related_missing"
    assert info.value.title == "The related list does not exist."


def test_wrong_key_is_an_auth_error(fake_ac):
    with ActiveCampaignClient(fake_ac.url, "wrong-key") as c, pytest.raises(AuthError) as info:
        c.get_list(1)
    assert info.value.status == 403 and isinstance(info.value, PermanentError)


def test_hooks_see_every_request(fake_ac):
    seen = []
    throttled = []
    with ActiveCampaignClient(fake_ac.url, fake_ac.api_key, throttle=lambda: throttled.append(1),
                              on_response=lambda t, s: seen.append((t, s))) as c:
        c.sync_contact(ADA)
        c.get_list(5)
        fake_ac.outage = True
        with pytest.raises(TransientError):
            next(c.lists())
    assert seen == [("POST contact/sync", 201), ("GET lists/{id}", 404), ("GET lists", 503)]
    assert len(throttled) == 3


def test_the_key_never_leaks_into_errors_or_logs(fake_ac, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3 included
    caplog.set_level(logging.DEBUG, logger="optin")  # an app built earlier may have set INFO
    fake_ac.rate_limit = None
    key = fake_ac.api_key
    errors: list[ActiveCampaignError] = []

    def expect(fn):
        with pytest.raises(ActiveCampaignError) as info:
            fn()
        errors.append(info.value)

    with ActiveCampaignClient(fake_ac.url, key, timeout=(5, 1.5)) as c:
        expect(lambda: c.sync_contact("not-an-address"))
        expect(lambda: c.bulk_import([{"email": "x"}]))
        fake_ac.fail_next(1, 429, retry_after="1")
        expect(lambda: c.find_contact(ADA))
        fake_ac.outage = True
        expect(lambda: c.find_contact(ADA))
        fake_ac.outage = False
        fake_ac.delay = 3.0
        expect(lambda: c.find_contact(ADA))
        fake_ac.delay = 0
    with ActiveCampaignClient(fake_ac.url, key + "-old") as c:
        expect(lambda: c.get_list(1))
    with ActiveCampaignClient(_closed_port_url(), key, timeout=(0.5, 0.5)) as c:
        expect(lambda: c.find_contact(ADA))  # requests would put the URL, ?email= and all, here

    assert [type(e) for e in errors] == [PermanentError, PermanentError, RateLimited,
                                         TransientError, TransientError, AuthError, TransientError]
    for error in errors:
        text = str(error) + repr(error) + repr(error.args) + "".join(
            traceback.format_exception(error))
        assert key not in text
        assert ADA not in text and quote(ADA) not in text  # raised from None: no URL
    for record in caplog.records:
        assert key not in record.getMessage()
    ours = [r for r in caplog.records if r.name == "optin.activecampaign.client"]
    assert ours and all(ADA not in r.getMessage() and "?" not in r.getMessage() for r in ours)
    assert "GET contacts -> 429 in" in ours[2].getMessage()
