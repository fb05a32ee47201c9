"""The audit export: every proof of a list as PDF and JSON, a manifest whose hashes match the
files, from the CLI (with a progress bar) and the operator route."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from optin.privacy.rights import identify

from ..conftest import ADMIN_TOKEN, deliver, links, retention_at, signup

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _three_addresses(app, client, mailbox) -> None:
    for name in ("anna", "ben", "cem"):
        assert signup(client, f"{name}@example.org", first_name=name.title()).status_code == 202
    deliver(app)
    assert client.post(links(mailbox.to("anna@example.org")[-1])["confirm"]).status_code == 303
    deliver(app)


def _check(folder: Path, manifest: dict) -> None:
    assert manifest["proofs"] == 3 and manifest["ledger_ok"] is True
    assert manifest["checkpoints"] == []  # filled by the anchor's checkpoints (issue 16, part 3)
    for entry in manifest["files"]:
        for kind in ("json", "pdf"):
            data = (folder / entry[kind]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry[f"{kind}_sha256"]
        assert (folder / entry["pdf"]).read_bytes().startswith(b"%PDF-")
        record = json.loads((folder / entry["json"]).read_text())
        assert record["document_id"] == entry["document_id"]
        assert entry["json"] == f"proof-{record['address_hash'][:16]}.json"
        assert "@" not in entry["json"] + entry["pdf"]  # files are named by the hash
    sums = (folder / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 7 and sums[-1].endswith("  manifest.json")
    for line in sums:
        digest, name = line.split("  ")
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def test_export_every_proof_of_a_list_from_the_cli(app, client, runner, newsletter, mailbox,
                                                   tmp_path):
    _three_addresses(app, client, mailbox)
    out = tmp_path / "export"
    result = runner.invoke(args=["proof", "--list", "newsletter", "--all", "--out", str(out),
                                 "--workers", "2", "--locale", "en"])
    assert result.exit_code == 0, result.output
    assert "3 proofs written to" in result.output and "ledger intact" in result.output
    assert "proofs of newsletter" in result.output  # the progress bar (stderr, mixed in)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["locale"] == "en"
    _check(out, manifest)
    statuses = sorted(json.loads((out / e["json"]).read_text())["consents"][0]["status"]
                      for e in manifest["files"])
    assert statuses == ["confirmed", "pending", "pending"]
    refused = runner.invoke(args=["proof", "anna@example.org", "--list", "newsletter", "--all",
                                  "--out", str(out)])
    assert refused.exit_code == 2 and "no EMAIL" in refused.output


def _layout_processes(pid: int) -> list[int]:
    """The export's pool processes (spawned children running multiprocessing's entry)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(child))
    return found


def test_a_killed_layout_process_ends_the_export_with_a_clear_error(
        app, app_config, client, newsletter, mailbox, tmp_path):
    """SIGKILL of a PDF layout process (the OOM killer does it) ends ``optin proof --all``
    with one line saying what happened and what to do, not a traceback; no manifest.json
    claims a complete export."""
    for i in range(12):
        assert signup(client, f"p{i}@example.org").status_code == 202
    deliver(app)
    out = tmp_path / "export"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIN_")}
    env.update(app_config, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, "-m", "optin", "proof", "--list", "newsletter", "--all", "--out",
         str(out), "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        layout = _layout_processes(proc.pid)
        if layout:
            time.sleep(0.5)  # started on its first proof
            os.kill(layout[0], signal.SIGKILL)
            killed = layout[0]
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=120)
    assert killed is not None, "no layout process seen"
    assert proc.returncode == 1, (stdout, stderr)
    assert b"Traceback" not in stderr, stderr.decode()
    assert b"a PDF layout process died" in stderr and b"run the export again" in stderr
    assert not (out / "manifest.json").exists()


def test_export_from_the_operator_route(app, client, newsletter, mailbox, tmp_path):
    _three_addresses(app, client, mailbox)
    response = client.get("/v1/lists/newsletter/proofs?locale=de", headers=AUTH)
    assert response.status_code == 200 and response.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        archive.extractall(tmp_path)
    folder = tmp_path / "proofs-newsletter"
    _check(folder, json.loads((folder / "manifest.json").read_text()))
    assert client.get("/v1/lists/nope/proofs", headers=AUTH).status_code == 404
    assert client.get("/v1/lists/newsletter/proofs?locale=fr", headers=AUTH).status_code == 422
    assert client.get("/v1/lists/newsletter/proofs").status_code == 401


@pytest.fixture
def paged_config(app_config: dict[str, str]) -> None:
    app_config["OPTIN_PROOF_EXPORT_PAGE_SIZE"] = "2"


def test_the_operator_route_exports_a_list_page_by_page(app, paged_config, client, newsletter,
                                                         mailbox, tmp_path):
    """A request lays out one page of proofs, not the whole list (hundreds of PDFs outlived
    the web tier's 30 s timeout: a 5xx); the pages together hold every proof once."""
    _three_addresses(app, client, mailbox)
    seen: list[str] = []
    url, number = "/v1/lists/newsletter/proofs?locale=en", 0
    while url:
        number += 1
        response = client.get(url, headers=AUTH)
        assert response.status_code == 200, response.data
        assert f"-page-{number}.zip" in response.headers["Content-Disposition"]
        folder = tmp_path / f"page{number}"
        with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
            archive.extractall(folder)
        manifest = json.loads((folder / "proofs-newsletter" / "manifest.json").read_text())
        assert manifest["page"] == {"number": number, "of": 2, "size": 2, "proofs_in_list": 3}
        assert manifest["locale"] == "en" and manifest["proofs"] == len(manifest["files"])
        seen += [e["address_hash"] for e in manifest["files"]]
        link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else ""
        assert (link is None) == (number == 2)
        if link:
            assert 'rel="next"' in link and "page=2" in link and "locale=en" in link
    assert len(seen) == 3 and len(set(seen)) == 3
    for bad in ("3", "0", "-1", "x", "1e3", "٣", "9" * 12):
        answer = client.get(f"/v1/lists/newsletter/proofs?page={bad}", headers=AUTH)
        assert answer.status_code == 422, bad
        assert answer.mimetype == "application/problem+json" and "page" in answer.json["errors"]


def test_minimized_records_are_listed_in_the_manifest_with_what_they_keep(
        app, client, runner, newsletter, mailbox, tmp_path):
    """An address whose records were all minimized has no proof to print: the manifest says
    so for each record (its keyed hash, when and by which run, the events kept, its chain's
    verdict) and what minimization kept and why; an address minimized and then signed up
    again has its proof, which shows the minimized cycle too."""
    _three_addresses(app, client, mailbox)  # anna confirmed; ben and cem never confirmed
    later = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    assert retention_at(app, runner, later).exit_code == 0
    assert signup(client, "cem@example.org").status_code == 202  # cem comes back
    deliver(app)
    out = tmp_path / "export"
    result = runner.invoke(args=["proof", "--list", "newsletter", "--all", "--out", str(out),
                                 "--workers", "1", "--locale", "de"])
    assert result.exit_code == 0, result.output
    assert "1 minimized addresses have no proof left (listed in manifest.json)" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["proofs"] == 2 and manifest["minimized_addresses"] == 1
    assert len(manifest["minimized"]) == 1
    (gone,) = manifest["minimized"]
    with app.app_context():
        _, ben_hash = identify("ben@example.org")
        _, cem_hash = identify("cem@example.org")
    assert gone["address_hash"] == ben_hash and gone["ledger_ok"] is True
    minimized_at = datetime.fromisoformat(gone["minimized_at"])  # when the run made it
    assert datetime.now(UTC) - timedelta(minutes=5) < minimized_at <= datetime.now(UTC)
    assert gone["retention_run"] == 1
    assert gone["retention_rule"] and gone["ledger_head"]
    kinds = [e["kind"] for e in gone["events"]]
    assert kinds[0] == "signup_requested" and kinds[-1] == "minimized"
    assert all(set(e) == {"seq", "kind", "at"} for e in gone["events"])  # nothing personal
    assert "ben" not in json.dumps(gone)
    assert "Schlüssel-Hash der Adresse" in manifest["minimized_note"]  # the export's language
    assert not any(path.name.startswith(f"proof-{ben_hash[:16]}") for path in out.iterdir())
    cem = json.loads((out / f"proof-{cem_hash[:16]}.json").read_text())
    assert [c["status"] for c in cem["consents"]] == ["pending", "minimized"]


def test_one_address_stored_in_two_spellings_is_one_proof_in_the_export(
        app, client, runner, newsletter, mailbox, tmp_path):
    """``Dora@…`` withdrew, then ``dora@…`` (the same mailbox, the same keyed hash) signed up
    again: two subscriptions whose stored addresses differ in case. The export has one
    proof for the address (both records in it), not two entries for one file name, the
    second overwriting the first and the first's SHA-256 no longer matching."""
    assert signup(client, "Dora@example.org").status_code == 202
    deliver(app)
    assert client.post(links(mailbox.to("Dora@example.org")[-1])["confirm"]).status_code == 303
    deliver(app)
    leave = links(mailbox.to("Dora@example.org")[-1])["unsubscribe"]
    assert client.post(leave, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert signup(client, "dora@example.org").status_code == 202
    deliver(app)
    out = tmp_path / "export"
    result = runner.invoke(args=["proof", "--list", "newsletter", "--all", "--out", str(out),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["proofs"] == 1, [e["json"] for e in manifest["files"]]
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
