"""``optin ac reconcile`` and the worker's periodic run: each kind of drift between
ActiveCampaign's list and the consent records, made on the fake ActiveCampaign and repaired."""

from __future__ import annotations

from sqlalchemy import select, update

from optin.config import current_settings
from optin.consent import subscriptions
from optin.consent.addresses import address_hash
from optin.delivery.notifications import unsubscribe_url
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import ConsentEvent, JobState, OutboxItem, Subscription, utcnow

from ..conftest import ADMIN_TOKEN, deliver

ADA, BOB, CAROL, DAVE, ERIN, FRANK, GINA = (
    f"{name}@example.org" for name in ("ada", "bob", "carol", "dave", "erin", "frank", "gina"))


def _status(app, address) -> str:
    with app.app_context():
        return db.session.scalar(select(Subscription.status).where(Subscription.email == address)
                                 .order_by(Subscription.id.desc()))


def _unsubscribe(app, client, address) -> None:
    with app.app_context():
        sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
        path = unsubscribe_url(sub).removeprefix("http://newsletter.test")
    assert client.post(path).status_code == 303


def _outbox(app, kind) -> list[tuple[int | None, str]]:
    with app.app_context():
        return [(r.subscription_id, r.status) for r in db.session.scalars(
            select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id))]


def _drift(ac_app, client, fake_ac, confirmed, signed_up) -> None:
    """One contact per kind of drift (and Ada, who is in order)."""
    for address in (ADA, BOB, CAROL, ERIN, FRANK):
        confirmed(address)
    # Bob withdrew here; then someone re-added him inside ActiveCampaign.
    _unsubscribe(ac_app, client, BOB)
    deliver(ac_app)
    fake_ac.add_contact(BOB, 1, status=1)
    # Carol unsubscribed inside ActiveCampaign and the webhook was lost.
    fake_ac.add_contact(CAROL, 1, status=2)
    # Dave was imported straight into ActiveCampaign: no consent here.
    fake_ac.add_contact(DAVE, 1, status=1)
    # Erin's contact was deleted in ActiveCampaign.
    fake_ac.delete_contact(ERIN)
    # Frank's mailbox bounced.
    fake_ac.add_contact(FRANK, 1, status=3)
    # Gina unsubscribed there long ago, confirmed afresh here; her subscribe is still queued.
    fake_ac.add_contact(GINA, 1, status=2)
    assert client.post(signed_up(GINA)).status_code == 303


def test_reconcile_repairs_each_kind_of_drift(ac_newsletter, confirmed, signed_up, ac_app, client,
                                              fake_ac, runner):
    _drift(ac_app, client, fake_ac, confirmed, signed_up)

    result = runner.invoke(args=["ac", "reconcile"])

    assert result.exit_code == 0, result.output
    out = result.output
    assert "newsletter <-> ActiveCampaign list 1: 6 members compared" in out
    assert "withdrawn here, subscribed there: 1 (unsubscribe queued)" in out and BOB in out
    assert "unsubscribed there, confirmed here: 1 (withdrawal recorded)" in out
    assert "subscribed there, no confirmed consent here: 1 (check in ActiveCampaign)" in out
    assert "confirmed here, not subscribed there: 1 (subscribe queued)" in out
    assert "confirmed here, bounced there: 1 (reported)" in out
    assert "confirmed here since: 1 (its subscribe is queued or dead)" in out

    # Carol's withdrawal is recorded here, from ActiveCampaign, via reconcile.
    assert _status(ac_app, CAROL) == "unsubscribed"
    with ac_app.app_context():
        event = db.session.scalar(select(ConsentEvent).join(Subscription)
                                  .where(Subscription.email == CAROL,
                                         ConsentEvent.kind == "unsubscribed"))
        assert event.origin == "activecampaign"
        assert event.details["via"] == "reconcile"
    # Gina's fresh consent is not mistaken for drift; Dave gets no invented consent.
    assert _status(ac_app, GINA) == "confirmed"
    assert _status(ac_app, DAVE) is None

    deliver(ac_app)

    assert fake_ac.contact_status(BOB, 1) == 2
    assert fake_ac.contact_status(CAROL, 1) == 2
    assert fake_ac.contact_status(ERIN, 1) == 1
    assert fake_ac.contact_status(GINA, 1) == 1
    assert fake_ac.contact_status(DAVE, 1) == 1  # reported, never touched
    assert fake_ac.contact_status(ADA, 1) == 1
    again = runner.invoke(args=["ac", "reconcile"])
    assert "withdrawal recorded" not in again.output
    assert "unsubscribe queued" not in again.output and "subscribe queued" not in again.output
    assert "no confirmed consent here: 1 (check in ActiveCampaign)" in again.output
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0


def test_dry_run_reports_and_changes_nothing(ac_newsletter, confirmed, signed_up, ac_app, client,
                                             fake_ac, runner):
    _drift(ac_app, client, fake_ac, confirmed, signed_up)
    queued = _outbox(ac_app, "ac_unsubscribe") + _outbox(ac_app, "ac_subscribe")

    result = runner.invoke(args=["ac", "reconcile", "--list", "newsletter", "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "dry run: nothing changed" in result.output
    assert "unsubscribed there, confirmed here: 1 (would record the withdrawal)" in result.output
    assert _status(ac_app, CAROL) == "confirmed"
    assert _outbox(ac_app, "ac_unsubscribe") + _outbox(ac_app, "ac_subscribe") == queued
    assert {r.method for r in fake_ac.requests[-1:]} == {"GET"}


def test_a_minimized_or_suppressed_address_is_unsubscribed_there(ac_newsletter, confirmed, ac_app,
                                                                 client, fake_ac, runner):
    confirmed(ADA)
    _unsubscribe(ac_app, client, ADA)
    deliver(ac_app)
    zed = "zed@example.org"
    with ac_app.app_context():  # retention minimized Ada's record: only the hash is left
        db.session.execute(update(Subscription).values(status="minimized", email=None,
                                                       ac_contact_id=None))
        # Zed was suppressed by an operator; he never had a subscription here.
        subscriptions.suppress(ac_newsletter["id"],
                               address_hash(zed, current_settings().hash_key), reason="operator")
        db.session.commit()
    fake_ac.add_contact(ADA, 1, status=1)  # both re-added inside ActiveCampaign
    fake_ac.add_contact(zed, 1, status=1)

    result = runner.invoke(args=["ac", "reconcile"])
    deliver(ac_app)

    assert "withdrawn here, subscribed there: 2 (unsubscribe queued)" in result.output
    assert "(address minimized)" not in result.output  # ActiveCampaign's own list names them
    assert fake_ac.contact_status(ADA, 1) == 2
    assert fake_ac.contact_status(zed, 1) == 2
    assert {status for _, status in _outbox(ac_app, "ac_unsubscribe")} == {"done"}


def test_the_worker_reconciles_periodically(ac_newsletter, confirmed, ac_app, fake_ac):
    confirmed(CAROL)
    fake_ac.add_contact(CAROL, 1, status=2)  # the webhook was lost
    worker = Worker(ac_app)

    with ac_app.app_context():
        worker.run_periodic()
        assert _status(ac_app, CAROL) == "unsubscribed"
        calls = len(fake_ac.requests)
        worker.run_periodic()  # not due again for an hour
        assert len(fake_ac.requests) == calls
        # An hour later it is.
        state = db.session.get(JobState, "periodic:ac_reconcile")
        state.value = {"last_started_at": (utcnow().replace(year=2000)).isoformat()}
        db.session.commit()
        worker.run_periodic()
        assert len(fake_ac.requests) > calls


def test_reconcile_in_dry_run_mode_says_so(app, runner):
    result = runner.invoke(args=["ac", "reconcile"])
    assert result.exit_code == 0
    assert "OPTIN_AC_URL is unset" in result.output


def test_a_list_without_an_activecampaign_id_is_refused(ac_app, newsletter, runner):
    result = runner.invoke(args=["ac", "reconcile", "--list", "newsletter"])
    assert result.exit_code != 0
    assert "no ActiveCampaign list id" in result.output


def test_an_address_erased_unknown_here_is_unsubscribed_there(ac_newsletter, ac_app, client,
                                                              fake_ac, runner):
    """Someone on ActiveCampaign's list (added there, never here) asks optin for erasure:
    reconcile found no consent here and left them subscribed there, mailed by every
    campaign. The erasure's do-not-contact entry makes reconcile unsubscribe them."""
    yan = "yan@example.org"
    fake_ac.add_contact(yan, 1, status=1)
    answer = client.delete(f"/v1/contacts?email={yan}",
                           headers={"Authorization": "Bearer " + ADMIN_TOKEN})
    assert answer.status_code == 200 and answer.get_json()["found"] is False
    result = runner.invoke(args=["ac", "reconcile"])
    deliver(ac_app)
    assert "withdrawn here, subscribed there: 1 (unsubscribe queued)" in result.output
    assert fake_ac.contact_status(yan, 1) == 2
