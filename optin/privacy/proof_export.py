"""The audit export: every proof of a list as PDF and JSON, with a manifest of hashes.

The proofs are built one after another in this process (each audited and noted on
its ledger, like any proof) and written as JSON at once; each one's document (HTML,
then PDF) is laid out and written by a pool of worker processes: layout is
WeasyPrint's pure CPU work, ≈ 0.3 s a proof against ≈ 0.03 s for the build, and
needs no app or database (``document.render_record`` and ``document.pdf_of``). At
most a few proofs per worker are in flight, so memory stays flat for any list size,
and the manifest lists them in the order they were built, whichever worker finished
first. Files are named by the address's keyed hash, never by the address.
``manifest.json`` lists each file with its SHA-256 and the proof's document id and
verdict; ``SHA256SUMS`` is the same for ``sha256sum -c``.

Addresses whose every record on the list was minimized have no proof left to print:
the manifest lists each such record under ``minimized`` (its keyed address hash, when
and by which retention run it was minimized, the event kinds and dates its ledger
keeps and that chain's verdict) with ``minimized_note`` saying what is kept and why.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from optin.config import current_settings
from optin.consent import ledger, lists
from optin.extensions import db
from optin.models import Subscription, utcnow
from optin.privacy import document, proof
from optin.privacy.wording import MINIMIZED_NOTE, ProofLocale
from optin.schemas import ProofSchema

MANIFEST_VERSION = 3  # 2: ``minimized`` lists the minimized records; 3: ``page`` (a paged export)
IN_FLIGHT_PER_WORKER = 3  # proofs handed to each worker ahead: keeps it busy, memory bounded
BATCH = 500


def addresses(list_id: int) -> list[str]:
    """Every address of the list that still has a proof to print, one per address as its
    keyed hash counts them (``Anna@…`` and ``anna@…`` stored by two consent cycles are one
    mailbox, one proof holding both, one file name): its first record's spelling."""
    first = (select(func.min(Subscription.id))
             .where(Subscription.list_id == list_id, Subscription.email.is_not(None))
             .group_by(Subscription.email_hash))
    return list(db.session.scalars(
        select(Subscription.email).where(Subscription.id.in_(first)).order_by(Subscription.id)))


def _pdf_job(record: dict[str, Any], locale: ProofLocale, zone: str, path: str) -> str:
    """In a worker: the proof's document laid out and written; its SHA-256."""
    pdf = document.pdf_of(document.render_record(record, locale, zone)[0])
    Path(path).write_bytes(pdf)
    return hashlib.sha256(pdf).hexdigest()


class _InProcess(Executor):
    """One process: for small lists and the operator route (no pool to start)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _pool(workers: int) -> Executor:
    if workers == 1:
        return _InProcess()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


@dataclass(frozen=True)
class Page:
    """Which part of a list an export holds: proofs ``size * (number - 1)`` onwards, in
    the order of the addresses' first records (a new signup joins the last page)."""

    number: int
    size: int


class PageOutOfRange(ValueError):
    """The page asked for is past the list's last page (``pages`` of them)."""

    def __init__(self, pages: int) -> None:
        super().__init__(f"a page from 1 to {pages}")
        self.pages = pages


def export_list(slug: str, out: Path, actor: str, *, locale: str | None = None,
                workers: int | None = None, page: Page | None = None,
                progress: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    """Write every proof of the list (or of one ``page`` of it) into ``out`` and return
    the manifest (also written).

    ``workers``: PDF layout processes (default: one per CPU; 1 = in this process).
    ``progress`` is called with 1 for each proof written. A paged export names its page
    and the list's page count in the manifest, and holds the minimized records on its
    first page only. Raises ``UnknownList`` and ``PageOutOfRange``.
    """
    mailing_list = lists.require_list(slug)
    chosen = document.choose_locale(locale, mailing_list)
    zone = current_settings().proof_timezone
    emails = addresses(mailing_list.id)
    paging: dict[str, int] | None = None
    if page is not None:
        pages = max(1, -(-len(emails) // page.size))
        if not 1 <= page.number <= pages:
            raise PageOutOfRange(pages)
        paging = {"number": page.number, "of": pages, "size": page.size,
                  "proofs_in_list": len(emails)}
        emails = emails[page.size * (page.number - 1):page.size * page.number]
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    pool = _pool(workers)
    entries: list[dict[str, Any]] = []
    in_flight: deque[tuple[dict[str, Any], Future[str]]] = deque()
    try:
        for email in emails:
            record = ProofSchema().dump(proof.build(email, slug, actor, purpose="audit_export"))
            name = f"proof-{record['address_hash'][:16]}"
            data = json.dumps(record, indent=2, ensure_ascii=False).encode()
            (out / f"{name}.json").write_bytes(data)
            entry = {"address_hash": record["address_hash"], "document_id": record["document_id"],
                     "ledger_ok": record["ledger_ok"], "checkpoint": record.get("checkpoint"),
                     "json": f"{name}.json", "pdf": f"{name}.pdf",
                     "json_sha256": hashlib.sha256(data).hexdigest()}
            in_flight.append((entry, pool.submit(_pdf_job, record, chosen, zone,
                                                 str(out / entry["pdf"]))))
            while len(in_flight) >= IN_FLIGHT_PER_WORKER * workers:
                entries.append(_finished(in_flight.popleft(), progress))
        while in_flight:
            entries.append(_finished(in_flight.popleft(), progress))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    slug, list_id = mailing_list.slug, mailing_list.id
    minimized = list(minimized_records(list_id)) if paging is None or paging["number"] == 1 else []
    return _manifest(out, slug, actor, chosen, entries, minimized, paging)


def _finished(job: tuple[dict[str, Any], Future[str]],
              progress: Callable[[int], None]) -> dict[str, Any]:
    entry, future = job
    entry["pdf_sha256"] = future.result()
    progress(1)
    return entry


def minimized_records(list_id: int) -> Iterator[dict[str, Any]]:
    """The list's minimized records of addresses with no proof left (no record of the
    address on the list keeps its address): what each one still holds."""
    still_known = select(Subscription.email_hash).where(Subscription.list_id == list_id,
                                                         Subscription.email.is_not(None))
    last_id = 0
    while True:
        subs = db.session.scalars(
            select(Subscription).where(Subscription.list_id == list_id,
                                       Subscription.email.is_(None),
                                       Subscription.email_hash.not_in(still_known),
                                       Subscription.id > last_id)
            .order_by(Subscription.id).limit(BATCH)
            .options(selectinload(Subscription.events))).all()
        if not subs:
            return
        for sub in subs:
            events = list(sub.events)
            problems = ledger.verify_subscription(sub, events)
            run = next((e.details or {} for e in reversed(events) if e.kind == "minimized"), {})
            yield {
                "address_hash": sub.email_hash,
                "subscription_id": sub.id,
                "minimized_at": sub.minimized_at.isoformat() if sub.minimized_at else None,
                "retention_rule": run.get("rule"),
                "retention_run": run.get("run"),
                "events": [{"seq": e.seq, "kind": e.kind, "at": e.at.isoformat()} for e in events],
                "ledger_ok": not problems,
                "ledger_problems": problems,
                "ledger_head": sub.ledger_head,
            }
        last_id = subs[-1].id
        db.session.expunge_all()


def _manifest(out: Path, slug: str, actor: str, locale: ProofLocale,
              entries: list[dict[str, Any]], minimized: list[dict[str, Any]],
              paging: dict[str, int] | None) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "list": slug,
        **({"page": paging} if paging else {}),
        "generated_at": utcnow().isoformat(),
        "generated_by": actor,
        "locale": locale,
        "proofs": len(entries),
        "ledger_ok": all(e["ledger_ok"] for e in entries + minimized),
        "minimized_addresses": len({m["address_hash"] for m in minimized}),
        # The signed checkpoints the proofs refer to,
        # each once (proof.covering_checkpoint), so the export can be checked offline.
        "checkpoints": _checkpoints(entries),
        "files": entries,
        "minimized_note": MINIMIZED_NOTE[locale],
        "minimized": minimized,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    sums = [f"{e[kind + '_sha256']}  {e[kind]}" for e in entries for kind in ("json", "pdf")]
    sums.append(f"{hashlib.sha256((out / 'manifest.json').read_bytes()).hexdigest()}  manifest.json")
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return manifest


def _checkpoints(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for entry in entries:
        checkpoint = entry.get("checkpoint")
        if checkpoint:
            seen.setdefault(json.dumps(checkpoint, sort_keys=True), checkpoint)
    return list(seen.values())
