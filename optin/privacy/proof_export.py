"""The audit export: every proof of a list as PDF and JSON, with a manifest of hashes.

The proofs are built one after another in this process (each audited and noted on
its ledger, like any proof), and laid out as PDF in a pool of worker processes:
layout is WeasyPrint's pure CPU work, and needs no app or database
(``document.render_record`` and ``document.pdf_of``). Files are named by the
address's keyed hash, never by the address. ``manifest.json`` lists each file
with its SHA-256 and the proof's document id and verdict; ``SHA256SUMS`` is the
same for ``sha256sum -c``. Addresses already minimized have no proof left to
print but their hash; the manifest counts them.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from optin.config import current_settings
from optin.consent import lists
from optin.extensions import db
from optin.models import Subscription, utcnow
from optin.privacy import document, proof
from optin.schemas import ProofSchema

MANIFEST_VERSION = 1


def addresses(list_id: int) -> list[str]:
    """Every address of the list that still has a proof to print (one per address)."""
    return list(db.session.scalars(
        select(Subscription.email).where(Subscription.list_id == list_id,
                                         Subscription.email.is_not(None))
        .group_by(Subscription.email).order_by(func.min(Subscription.id))))


def _minimized(list_id: int) -> int:
    return db.session.scalar(select(func.count(func.distinct(Subscription.email_hash))).where(
        Subscription.list_id == list_id, Subscription.email.is_(None))) or 0


def _pdf_job(html: str) -> bytes:
    return document.pdf_of(html)


class _InProcess(Executor):
    """One process: for small lists and the operator route (no pool to start)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_list(slug: str, out: Path, actor: str, *, locale: str | None = None,
                workers: int | None = None,
                progress: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    """Write every proof of the list into ``out`` and return the manifest (also written).

    ``workers``: PDF layout processes (default: one per CPU; 1 = in this process).
    ``progress`` is called with 1 for each proof written. Raises ``UnknownList``.
    """
    mailing_list = lists.require_list(slug)
    chosen = document.choose_locale(locale, mailing_list)
    zone = current_settings().proof_timezone
    out.mkdir(parents=True, exist_ok=True)
    emails = addresses(mailing_list.id)
    workers = workers or os.cpu_count() or 1
    pool: Executor = (_InProcess() if workers == 1 else ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")))
    entries: list[dict[str, Any]] = []
    try:
        pending: list[tuple[dict[str, Any], Future[bytes]]] = []
        for email in emails:
            record = ProofSchema().dump(proof.build(email, slug, actor, purpose="audit_export"))
            name = f"proof-{record['address_hash'][:16]}"
            (out / f"{name}.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))
            html, _ = document.render_record(record, chosen, zone)
            entry = {"address_hash": record["address_hash"], "document_id": record["document_id"],
                     "ledger_ok": record["ledger_ok"], "checkpoint": record.get("checkpoint"),
                     "json": f"{name}.json", "pdf": f"{name}.pdf"}
            pending.append((entry, pool.submit(_pdf_job, html)))
            if len(pending) >= 4 * workers:  # keep the pool busy, memory bounded
                entries.extend(_written(out, pending[:workers], progress))
                del pending[:workers]
        entries.extend(_written(out, pending, progress))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return _manifest(out, mailing_list.slug, actor, chosen, entries, _minimized(mailing_list.id))


def _written(out: Path, pending: list[tuple[dict[str, Any], Future[bytes]]],
             progress: Callable[[int], None]) -> Iterator[dict[str, Any]]:
    for entry, future in pending:
        (out / entry["pdf"]).write_bytes(future.result())
        entry["json_sha256"] = _sha256(out / entry["json"])
        entry["pdf_sha256"] = _sha256(out / entry["pdf"])
        progress(1)
        yield entry


def _manifest(out: Path, slug: str, actor: str, locale: str, entries: list[dict[str, Any]],
              minimized: int) -> dict[str, Any]:
    manifest = {
        "version": MANIFEST_VERSION,
        "list": slug,
        "generated_at": utcnow().isoformat(),
        "generated_by": actor,
        "locale": locale,
        "proofs": len(entries),
        "ledger_ok": all(e["ledger_ok"] for e in entries),
        "minimized_addresses": minimized,
        # The signed checkpoints the proofs refer to,
        # each once (proof.covering_checkpoint), so the export can be checked offline.
        "checkpoints": _checkpoints(entries),
        "files": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    sums = [f"{e[kind + '_sha256']}  {e[kind]}" for e in entries for kind in ("json", "pdf")]
    sums.append(f"{_sha256(out / 'manifest.json')}  manifest.json")
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return manifest


def _checkpoints(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for entry in entries:
        checkpoint = entry.get("checkpoint")
        if checkpoint:
            seen.setdefault(json.dumps(checkpoint, sort_keys=True), checkpoint)
    return list(seen.values())
