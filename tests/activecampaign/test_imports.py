"""``optin import activecampaign`` against the ActiveCampaign stand-in, and ``optin ac backfill``
of imported contacts."""

from __future__ import annotations

import zipfile

from sqlalchemy import select

from optin.consent import ledger
from optin.extensions import db
from optin.models import ConsentEvent, Subscription

from ..privacy.test_imports import mc_csv, mc_member


def _subs(app) -> dict[str, Subscription]:
    with app.app_context():
        rows = db.session.scalars(select(Subscription)).all()
        db.session.expunge_all()
        return {s.email: s for s in rows}


def _imported_event(app, sub_id: int) -> ConsentEvent:
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent).where(
            ConsentEvent.subscription_id == sub_id, ConsentEvent.kind == "consent_imported"))
        db.session.expunge_all()
        return event


def test_members_of_the_mapped_list_come_in_with_sdate_and_ip(
        ac_app, runner, ac_newsletter, fake_ac, confirmed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    confirmed("known@example.org")  # optin's own consent: left alone
    fake_ac.add_contact("ada@example.org", 1, status=1, first_name="Ada",
                        subscribed_at="2019-02-03T04:05:06-05:00", ip4_sub="3325256711")
    fake_ac.add_contact("bob@example.org", 1, status=2, subscribed_at="2018-01-01T00:00:00-05:00",
                        unsubscribed_at="2022-07-08T09:10:11-05:00", unsubreason="no time")
    fake_ac.add_contact("cat@example.org", 1, status=3)
    fake_ac.add_contact("new@example.org", 1, status=0)  # unconfirmed there: no consent
    fake_ac.add_contact("other@example.org", 2, status=1)  # another list
    result = runner.invoke(args=["import", "activecampaign", "--list", "newsletter"])
    assert result.exit_code == 0, result.output
    assert "imported (consent with its evidence, marked as imported): 1" in result.output
    assert "withdrawn (withdrawal recorded, address suppressed): 2" in result.output
    assert "already known (nothing changed): 1" in result.output
    assert "rejected (see the report file): 1" in result.output
    found = _subs(ac_app)
    assert "other@example.org" not in found and "new@example.org" not in found
    ada = found["ada@example.org"]
    assert (ada.status, ada.imported_from, ada.first_name) == ("confirmed", "activecampaign", "Ada")
    assert ada.ac_contact_id is not None
    assert ada.confirmed_at.isoformat() == "2019-02-03T09:05:06+00:00"
    d = _imported_event(ac_app, ada.id).details
    assert d["evidence"]["signup_time"] == "2019-02-03T04:05:06-05:00"  # as given
    assert d["evidence"]["signup_ip"] == "3325256711"
    assert d["interpreted"]["signup_ip"] == "198.51.100.7"
    assert {"confirm_time", "confirm_ip"} <= set(d["missing"])
    assert d["columns"]["signup_time"] == "contactList.sdate" and d["file_sha256"] is None
    bob = found["bob@example.org"]
    assert bob.status == "unsubscribed"
    assert bob.withdrawn_at.isoformat() == "2022-07-08T14:10:11+00:00"
    assert _imported_event(ac_app, bob.id).details["extra"]["contactList.unsubreason"] == "no time"
    assert found["known@example.org"].imported_from is None
    again = runner.invoke(args=["import", "activecampaign", "--list", "newsletter"])
    assert "already known (nothing changed): 4" in again.output
    with ac_app.app_context():
        assert ledger.verify(db.session()).ok


def test_backfill_pushes_imported_consents_and_imported_withdrawals(
        ac_app, runner, ac_newsletter, fake_ac, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("subscribed_members_export_1.csv", mc_csv([mc_member("ada@example.org")]))
        archive.writestr("unsubscribed_members_export_1.csv", mc_csv(
            [mc_member("gone@example.org", UNSUB_TIME="2023-01-01 00:00:00")], ["UNSUB_TIME"]))
    fake_ac.add_contact("gone@example.org", 1, status=1)  # still subscribed there
    assert runner.invoke(args=["import", "mailchimp", str(path), "--list", "newsletter"]).exit_code == 0
    result = runner.invoke(args=["ac", "backfill", "--list", "newsletter"])
    assert result.exit_code == 0, result.output
    assert "sent 2" in result.output
    assert fake_ac.contact_status("ada@example.org", 1) == 1
    assert fake_ac.contact_status("gone@example.org", 1) == 2  # suppressed: sent as unsubscribed
    with ac_app.app_context():
        kinds = [e.kind for e in db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.id))]
        assert kinds.count("synced") == 2
