"""Signed checkpoints against an insider: rewrites and deletions behind the service's back.

The insider can write to the database and knows the code: they alter an event and
recompute every hash after it with the ledger's own functions, or delete a
subscription with all it has. The chains in the database then verify; the
checkpoints published outside it do not let them.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from optin import create_app
from optin.consent import checkpoint_file, checkpoints, ledger
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import (
    ConsentEvent,
    LedgerCheckpoint,
    LedgerCheckpointLeaf,
    MailCopy,
    OutboxItem,
    Signup,
    Subscription,
    utcnow,
)
from optin.privacy import wording

from ..conftest import LEDGER_KEY, NEXT_LEDGER_KEY, retention_at
from ..privacy.test_document import english_left


def public_key(seed: str) -> str:
    key = checkpoint_file.private_key(base64.b64decode(seed)).public_key()
    return checkpoint_file.encode_key(checkpoint_file.public_bytes(key))


@pytest.fixture
def history(app, client, confirmed, signed_config):
    """Two confirmed subscribers (one of them withdrew) and a checkpoint of them."""
    client.post(confirmed("k@example.org"))
    confirmed("l@example.org")
    return app


def checkpoint(runner, expect: int = 0) -> str:
    result = runner.invoke(args=["ledger", "checkpoint"])
    assert result.exit_code == expect, result.output
    return result.output


def verify(runner, *args: str):
    return runner.invoke(args=["ledger", "verify", *args])


def published_lines(app) -> list[dict]:
    path = app.extensions["optin.settings"].ledger_checkpoint_file
    return [json.loads(line) for line in path.read_text().splitlines()]


def first_subscription(app) -> int:
    with app.app_context():
        return db.session.scalar(select(Subscription.id).order_by(Subscription.id))


def rewrite_and_rehash(app, sub_id: int, **changes) -> None:
    """The insider's rewrite: change event #1, recompute every content and chain hash of
    the chain with the ledger's own code, and move the subscription's head to match."""
    with app.app_context():
        events = db.session.scalars(select(ConsentEvent).where(
            ConsentEvent.subscription_id == sub_id).order_by(ConsentEvent.seq)).all()
        for name, value in changes.items():
            setattr(events[0], name, value)
        previous = None
        for event in events:
            if event.redacted_at is None:
                event.content_hash = ledger.content_hash(event)
            event.chain_hash = ledger.chain_hash(previous, event.seq, event.content_hash)
            previous = event.chain_hash
        sub = db.session.get(Subscription, sub_id)
        sub.ledger_head = previous
        db.session.commit()
        assert ledger.verify(db.session).ok  # the chains alone no longer see it


def delete_subscription(app, sub_id: int) -> None:
    """The insider's deletion: the subscription, its events, its signup records, its outbox,
    its mail copies."""
    with app.app_context():
        for table in (ConsentEvent, Signup, OutboxItem, MailCopy):
            db.session.execute(delete(table).where(table.subscription_id == sub_id))
        db.session.execute(delete(Subscription).where(Subscription.id == sub_id))
        db.session.commit()
        assert ledger.verify(db.session).ok


# --- the path that must keep working ------------------------------------------------------


def test_checkpoint_is_signed_published_and_verifies(history, runner, client, confirmed):
    output = checkpoint(runner)
    assert "checkpoint 1: 2 chains (2 moved)" in output
    [line] = published_lines(history)
    statement = line["checkpoint"]
    assert statement["n"] == 1 and statement["tree_size"] == 2 and statement["prev"] is None
    key = checkpoint_file.decode_key(public_key(LEDGER_KEY))
    key.verify(base64.b64decode(line["signature"]), checkpoint_file.canonical(statement))
    result = verify(runner)
    assert result.exit_code == 0, result.output
    assert "ledger OK" in result.output and "newest 1" in result.output

    # Chains grow after the checkpoint (a new subscriber, a withdrawal): still OK.
    confirmed("m@example.org")
    result = verify(runner)
    assert result.exit_code == 0, result.output
    assert "checkpoint 2: 3 chains (1 moved)" in checkpoint(runner)  # only the new one moved
    assert published_lines(history)[1]["checkpoint"]["prev"] == checkpoint_file.statement_hash(statement)
    assert verify(runner, "--all").exit_code == 0


def test_retention_minimization_is_anchored_and_still_verifies(app, history, runner):
    checkpoint(runner)
    years_ahead = (utcnow() + timedelta(days=366 * 5)).isoformat()
    result = retention_at(app, runner, years_ahead)
    assert "withdrawn_consent: minimized 1" in result.output, result.output
    lines = published_lines(history)
    assert len(lines) == 2, "a retention run that minimized something is checkpointed at once"
    with history.app_context():
        minimized = db.session.scalar(select(Subscription).where(Subscription.status == "minimized"))
        assert db.session.scalar(select(LedgerCheckpointLeaf.seq).where(
            LedgerCheckpointLeaf.checkpoint_id == 2,
            LedgerCheckpointLeaf.subscription_id == minimized.id)) == minimized.ledger_seq
    result = verify(runner, "--all")
    assert result.exit_code == 0, result.output


def test_worker_signs_checkpoints_on_its_schedule(history):
    worker = Worker(history)
    with history.app_context():
        worker.run_periodic()
        worker.run_periodic()  # not due again within OPTIN_LEDGER_CHECKPOINT_MINUTES
        assert db.session.scalar(select(func.count()).select_from(LedgerCheckpoint)) == 1
    assert len(published_lines(history)) == 1


def test_without_a_key_nothing_is_signed(app, runner, confirmed):
    confirmed()
    result = runner.invoke(args=["ledger", "checkpoint"])
    assert result.exit_code == 1 and "OPTIN_LEDGER_SIGNING_KEY is unset" in result.output
    Worker(app).drain()
    with app.app_context():
        Worker(app).run_periodic()
        assert db.session.scalar(select(func.count()).select_from(LedgerCheckpoint)) == 0
    result = verify(runner)
    assert result.exit_code == 0 and "no published checkpoint" in result.output


def test_a_bad_signing_key_stops_the_app_without_repeating_it(tmp_path):
    from optin.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        create_app({"OPTIN_INSTANCE_PATH": str(tmp_path), "OPTIN_LEDGER_SIGNING_KEY": "c2hvcnQ-secret"})
    assert "OPTIN_LEDGER_SIGNING_KEY" in str(caught.value)
    assert "c2hvcnQ-secret" not in str(caught.value)


def test_an_emptied_checkpoint_file_fails_verification(history, runner):
    checkpoint(runner)
    history.extensions["optin.settings"].ledger_checkpoint_file.write_text("")
    result = verify(runner)
    assert result.exit_code == 1 and "holds no valid checkpoint" in result.output


def test_development_key_is_made_once_in_the_instance_folder(tmp_path):
    config = {"OPTIN_INSTANCE_PATH": str(tmp_path / "instance")}
    first = create_app(config).extensions["optin.settings"].ledger_key_seed
    again = create_app(config).extensions["optin.settings"].ledger_key_seed
    assert first is not None and len(first) == 32 and first == again
    assert (tmp_path / "instance" / "ledger_signing_key").stat().st_mode & 0o077 == 0


# --- the insider --------------------------------------------------------------------------


def test_history_altered_and_rehashed_is_caught(history, runner):
    checkpoint(runner)
    sub_id = first_subscription(history)
    rewrite_and_rehash(history, sub_id, ip="198.51.100.99")
    result = verify(runner)
    assert result.exit_code == 1
    assert f"subscription {sub_id}: its history up to event #" in result.output
    assert "altered and re-hashed" in result.output

    # The next checkpoint does not adopt the rewritten chain: it keeps the signed head.
    output = checkpoint(runner, expect=1)
    assert f"subscription {sub_id} does not extend" in output
    result = verify(runner)
    assert result.exit_code == 1 and "altered and re-hashed" in result.output


def test_subscription_deleted_with_everything_is_caught(history, runner):
    checkpoint(runner)
    sub_id = first_subscription(history)
    delete_subscription(history, sub_id)
    result = verify(runner)
    assert result.exit_code == 1
    assert f"subscription {sub_id}, whose events #1.." in result.output and "is gone" in result.output


def test_deleting_the_checkpoint_records_too_is_caught_and_refused(history, runner):
    checkpoint(runner)
    sub_id = first_subscription(history)
    delete_subscription(history, sub_id)
    with history.app_context():
        db.session.execute(delete(LedgerCheckpointLeaf).where(
            LedgerCheckpointLeaf.subscription_id == sub_id))
        db.session.commit()
    result = verify(runner)
    assert result.exit_code == 1 and "does not reproduce its root" in result.output
    # A new checkpoint would launder the deletion: refused.
    output = checkpoint(runner, expect=1)
    assert "no longer reproduces checkpoint 1" in output
    # Wiping every checkpoint record: the file still has them.
    with history.app_context():
        db.session.execute(delete(LedgerCheckpointLeaf))
        db.session.execute(delete(LedgerCheckpoint))
        db.session.commit()
    assert "the published file has checkpoint 1" in checkpoint(runner, expect=1)
    result = verify(runner)
    assert result.exit_code == 1 and "the database has no record of it" in result.output


def test_a_checkpoint_with_a_wrong_signature_is_refused(history, runner):
    checkpoint(runner)
    path = history.extensions["optin.settings"].ledger_checkpoint_file
    original = path.read_text()
    line = json.loads(original)
    # The insider builds the checkpoint the rewritten database would have, and cannot sign it.
    sub_id = first_subscription(history)
    rewrite_and_rehash(history, sub_id, user_agent="curl/8")
    with history.app_context():
        heads = [(s, q, h) for s, q, h in checkpoints.leaves(1)]
        heads = [(s, q, db.session.scalar(select(ConsentEvent.chain_hash).where(
            ConsentEvent.subscription_id == s, ConsentEvent.seq == q))) for s, q, _ in heads]
    line["checkpoint"]["root"] = checkpoint_file.merkle.root(checkpoints.tree_of(heads))
    path.write_text(json.dumps(line) + "\n")
    result = verify(runner)
    assert result.exit_code == 1
    assert "checkpoint 1: its signature does not verify" in result.output and "refused" in result.output

    # Signed with some other key (the insider's own): refused too, whatever public key it names.
    own = checkpoint_file.private_key(b"\x07" * 32)
    line["checkpoint"]["key_id"] = checkpoint_file.key_id(own.public_key())
    forged = checkpoint_file.sign(line["checkpoint"], own)
    path.write_text(forged.line() + "\n")
    result = verify(runner)
    assert result.exit_code == 1 and "not a trusted key" in result.output


def test_key_rotation(history, runner, app_config):
    """Old checkpoints stay verifiable with the old public key; tampering is caught after."""
    checkpoint(runner)
    rotated_config = {**app_config, "OPTIN_LEDGER_SIGNING_KEY": NEXT_LEDGER_KEY,
                      "OPTIN_LEDGER_PUBLIC_KEYS": public_key(LEDGER_KEY)}
    rotated = create_app(rotated_config)
    rotated_runner = rotated.test_cli_runner()
    assert "checkpoint 2" in checkpoint(rotated_runner)
    first, second = published_lines(history)
    assert first["checkpoint"]["key_id"] != second["checkpoint"]["key_id"]
    result = verify(rotated_runner, "--all")
    assert result.exit_code == 0, result.output

    # Without the old public key, the old checkpoint is refused.
    forgetful = create_app({**app_config, "OPTIN_LEDGER_SIGNING_KEY": NEXT_LEDGER_KEY})
    result = verify(forgetful.test_cli_runner())
    assert result.exit_code == 1 and "checkpoint 1: signed by key" in result.output

    sub_id = first_subscription(history)
    rewrite_and_rehash(history, sub_id, ip="192.0.2.55")
    result = verify(rotated_runner)
    assert result.exit_code == 1 and f"subscription {sub_id}: its history" in result.output
    other = first_subscription(history) + 1
    delete_subscription(history, other)
    result = verify(rotated_runner)
    assert result.exit_code == 1 and f"subscription {other}, whose events" in result.output
    with rotated.app_context():
        db.session.remove()
        db.engine.dispose()
    with forgetful.app_context():
        db.engine.dispose()


# --- RFC 3161 -----------------------------------------------------------------------------


@pytest.fixture
def tsa_config(signed_config, tsa):
    signed_config["OPTIN_LEDGER_TSA_URL"] = tsa.url
    return signed_config


def test_checkpoints_are_timestamped_by_an_rfc3161_authority(history, runner, tsa, tsa_config,
                                                             tmp_path):
    asked = tsa.requests
    assert "RFC 3161 time-stamped" in checkpoint(runner)
    assert tsa.requests == asked + 1
    [line] = published_lines(history)
    token = base64.b64decode(line["tsa_token"])
    # An outsider checks the token with openssl alone, against the TSA's CA.
    (tmp_path / "statement.json").write_bytes(checkpoint_file.canonical(line["checkpoint"]))
    (tmp_path / "token.der").write_bytes(token)
    check = subprocess.run(
        ["openssl", "ts", "-verify", "-data", str(tmp_path / "statement.json"), "-in",
         str(tmp_path / "token.der"), "-token_in", "-CAfile", str(tsa.ca_file),
         "-untrusted", str(tsa.cert_file)], capture_output=True, text=True)
    assert check.returncode == 0 and "Verification: OK" in check.stdout, check.stderr
    assert verify(runner).exit_code == 0

    # A token over other data (here: another checkpoint's) is refused.
    other = checkpoint(runner)
    assert "checkpoint 2" in other
    lines = published_lines(history)
    lines[0]["tsa_token"] = lines[1]["tsa_token"]
    path = history.extensions["optin.settings"].ledger_checkpoint_file
    path.write_text("".join(json.dumps(entry) + "\n" for entry in lines))
    result = verify(runner)
    assert result.exit_code == 1 and "time-stamp does not check" in result.output


def test_a_tsa_outage_does_not_stop_checkpoints(history, runner, tsa, tsa_config):
    tsa.refuse = True
    try:
        output = checkpoint(runner)
    finally:
        tsa.refuse = False
    assert "checkpoint 1" in output and "time-stamped" not in output
    assert published_lines(history)[0]["tsa_token"] is None
    assert verify(runner).exit_code == 0


# --- what an outsider checks ---------------------------------------------------------------


def test_standalone_check_of_the_file_and_a_proofs_path(history, runner, tmp_path):
    checkpoint(runner)
    path = history.extensions["optin.settings"].ledger_checkpoint_file
    result = runner.invoke(args=["proof", "k@example.org", "--list", "newsletter", "--format", "json"])
    assert result.exit_code == 0, result.output
    proof = json.loads(result.output)
    section = proof["consents"][0]["checkpoint"]
    assert section["checkpoint"] == 1 and section["public_key"] == public_key(LEDGER_KEY)
    assert section["leaf"]["seq"] == section["covers_events_through"] >= 4
    (tmp_path / "proof.json").write_text(result.output)
    page = runner.invoke(args=["proof", "k@example.org", "--list", "newsletter", "--format", "html",
                               "--locale", "en"])
    assert "Signed checkpoint" in page.output and section["root"] in page.output
    assert section["signature"] in page.output and section["public_key"] in page.output
    german = runner.invoke(args=["proof", "k@example.org", "--list", "newsletter", "--format",
                                 "html"]).output  # the list's language
    assert "Signierter Checkpoint" in german and f"Merkle-Wurzel ({section['tree_size']} Ketten)" in german
    assert "außerhalb der Datenbank veröffentlicht" in german and section["root"] in german
    assert "Signed checkpoint" not in german and "Anyone can check" not in german
    text = runner.invoke(args=["proof", "k@example.org", "--list", "newsletter",
                               "--locale", "en"]).output
    assert f"#1 of {section['at']} covers events #1..#{section['covers_events_through']}" in text
    text = runner.invoke(args=["proof", "k@example.org", "--list", "newsletter"]).output
    assert f"#1 vom {section['at']} erfasst die Ereignisse #1..#" in text
    command = [sys.executable, "-m", "optin.consent.checkpoint_file", str(path),
               "--public-key", public_key(LEDGER_KEY), "--proof", str(tmp_path / "proof.json")]
    check = subprocess.run(command, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "1 checkpoints verified" in check.stdout and "are in checkpoint 1" in check.stdout

    section["leaf"]["chain_hash"] = "f" * 64  # a head the checkpoint never signed
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    check = subprocess.run(command, capture_output=True, text=True)
    assert check.returncode == 1 and "is not in checkpoint 1" in check.stderr
    wrong_key = [*command[:5], public_key(NEXT_LEDGER_KEY)]
    check = subprocess.run(wrong_key, capture_output=True, text=True)
    assert check.returncode == 1 and "not a trusted key" in check.stderr


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs poppler-utils")
def test_the_german_pdf_names_its_checkpoint_in_german(history, runner, tmp_path):
    checkpoint(runner)
    out = tmp_path / "proof.pdf"
    result = runner.invoke(args=["proof", "k@example.org", "--list", "newsletter", "--format", "pdf",
                                 "--out", str(out)])  # the list's language: German
    assert result.exit_code == 0, result.output
    text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    flat = " ".join(text.split())
    for german in ("Signierter Checkpoint", "von Protokoll-Checkpoint 1 erfasst",
                   "Jeder kann ihn ohne diesen Dienst prüfen", "Ed25519-Signatur",
                   "Öffentlicher Schlüssel (ID", "Merkle-Pfad", "Signierte Erklärung"):
        assert german in flat, german
    assert english_left(text, wording.LABELS, wording.EVENTS) == []


def test_public_key_and_new_key_commands(app, runner, signed_config):
    result = runner.invoke(args=["ledger", "public-key"])
    assert result.exit_code == 0 and result.output.startswith(public_key(LEDGER_KEY))
    result = runner.invoke(args=["ledger", "new-key"])
    assert result.exit_code == 0
    seed = result.stdout.strip()
    assert len(base64.b64decode(seed)) == 32 and seed != LEDGER_KEY
    assert f"public key {public_key(seed)}" in result.stderr


def test_checkpoints_in_a_log_are_read_like_the_file(history, runner, tmp_path):
    """The log pipeline's copy (a JSON log record quoting the line) verifies like the file."""
    checkpoint(runner)
    line = history.extensions["optin.settings"].ledger_checkpoint_file.read_text().strip()
    record = {"message": f"ledger checkpoint 1 published: {line}", "levelname": "INFO"}
    log = tmp_path / "app.log"
    log.write_text("an unrelated line\n" + json.dumps(record) + "\n")
    result = verify(runner, "--checkpoints", str(log))
    assert result.exit_code == 0, result.output
    assert "1 checkpoints in" in result.output
    assert Path(log).read_text().count("optin.ledger.checkpoint") == 1


def test_unpublished_checkpoint_is_published_with_the_next(history, runner):
    """A checkpoint the file could not take is signed and kept, and written before the next."""
    path = history.extensions["optin.settings"].ledger_checkpoint_file
    path.mkdir(parents=True)  # the file cannot be written (a directory is in its place)
    output = checkpoint(runner, expect=1)
    assert "not published: checkpoint 1 not written" in output
    path.rmdir()
    assert "checkpoint 2" in checkpoint(runner)
    assert [entry["checkpoint"]["n"] for entry in published_lines(history)] == [1, 2]
    with history.app_context():
        assert db.session.scalar(select(func.count()).select_from(LedgerCheckpoint).where(
            LedgerCheckpoint.published_at.is_(None))) == 0
    assert verify(runner, "--all").exit_code == 0


def test_a_head_moved_by_hand_is_never_signed(history, runner):
    """Moving only the subscription's head (to a hash no event has) is not taken into the
    next checkpoint: a checkpoint signs the chain's own last event."""
    checkpoint(runner)
    sub_id = first_subscription(history)
    with history.app_context():
        db.session.execute(update(Subscription).where(Subscription.id == sub_id)
                           .values(ledger_head="a" * 64))
        db.session.commit()
    checkpoint(runner)
    with history.app_context():
        assert "a" * 64 not in {leaf.chain_hash for leaf in db.session.scalars(
            select(LedgerCheckpointLeaf))}
    result = verify(runner)
    assert result.exit_code == 1 and f"TAMPERED: subscription {sub_id}" in result.output


@pytest.mark.parametrize("leaf_too", [False, True])
def test_a_proof_of_a_history_altered_and_rehashed_says_so(history, runner, leaf_too):
    """`optin ledger verify` caught the rewrite, but the proof checked the chain alone:
    "Ledger: verified, intact", the altered IP shown "covered by checkpoint 1". The proof
    now holds its checkpoint section to the chain, as verify does, and the database's copy
    of the checkpoint to its signature and root (an insider who moves the signed head too)."""
    checkpoint(runner)
    sub_id = first_subscription(history)
    rewrite_and_rehash(history, sub_id, ip="198.51.100.99")
    if leaf_too:
        with history.app_context():
            sub = db.session.get(Subscription, sub_id)
            event = db.session.scalar(select(ConsentEvent).where(
                ConsentEvent.subscription_id == sub_id,
                ConsentEvent.seq == db.session.scalar(select(LedgerCheckpointLeaf.seq).where(
                    LedgerCheckpointLeaf.subscription_id == sub.id))))
            db.session.execute(update(LedgerCheckpointLeaf).where(
                LedgerCheckpointLeaf.subscription_id == sub_id).values(chain_hash=event.chain_hash))
            db.session.commit()
    result = runner.invoke(args=["proof", "k@example.org", "--list", "newsletter",
                                 "--format", "json"])
    record = json.loads(result.output)
    assert record["ledger_ok"] is False
    (problem,) = record["consents"][0]["ledger"]["problems"]
    assert ("does not lead to the root it signed" if leaf_too
            else "is not what checkpoint 1 signed (altered and re-hashed)") in problem
    text = runner.invoke(args=["proof", "k@example.org", "--list", "newsletter", "--locale", "en"])
    assert text.exit_code == 1 and "intact" not in text.output.splitlines()[4]
    assert verify(runner).exit_code == 1


@pytest.mark.parametrize("forgery", ["edited copy", "rewritten and re-hashed"])
def test_the_standalone_check_holds_the_proofs_events_to_the_signed_head(
        history, runner, tmp_path, forgery):
    """The standalone check said "events #1..#N are in checkpoint 1" for any events a proof
    listed: only the leaf was checked. An edited proof (the confirmation's IP changed in the
    JSON) or the proof of a history rewritten in the database and re-hashed passed."""
    checkpoint(runner)
    if forgery == "rewritten and re-hashed":
        rewrite_and_rehash(history, first_subscription(history), ip="198.51.100.99")
    result = runner.invoke(args=["proof", "k@example.org", "--list", "newsletter",
                                 "--format", "json"])
    proof = json.loads(result.output)
    if forgery == "edited copy":
        event = next(e for e in proof["consents"][0]["events"] if e["kind"] == "confirmed")
        event["ip"] = "198.51.100.99"
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    path = history.extensions["optin.settings"].ledger_checkpoint_file
    check = subprocess.run([sys.executable, "-m", "optin.consent.checkpoint_file", str(path),
                            "--public-key", public_key(LEDGER_KEY),
                            "--proof", str(tmp_path / "proof.json")],
                           capture_output=True, text=True)
    assert check.returncode == 1, check.stdout
    assert ("does not hash as recorded (altered)" if forgery == "edited copy"
            else "are not what checkpoint 1 signed (altered and re-hashed)") in check.stderr
    assert "are in checkpoint 1" not in check.stdout
