"""Published ledger checkpoints: their format, keys and signatures, checked without a database.

One checkpoint is one JSON line::

    {"checkpoint": {...statement...}, "public_key": "<base64>", "signature": "<base64>",
     "tsa_token": "<base64 DER>" | null, "type": "optin.ledger.checkpoint"}

The statement is what is signed, as canonical JSON (keys sorted, no spaces,
UTF-8): ``{"at", "key_id", "n", "prev", "root", "tree_size", "v"}``. ``root`` is
the RFC 9162 Merkle root over every chain head (``consent.merkle``), ``prev``
the SHA-256 of the previous checkpoint's statement, so the published lines form
a chain of their own. ``tsa_token`` time-stamps SHA-256 of the statement.

Run ``python -m optin.consent.checkpoint_file FILE --public-key KEY`` to check a
file (and, with ``--proof PROOF.json``, that a proof's chain head is in its
checkpoint, and that the events the proof shows hash and chain to that head) with
no access to the service or its database.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from optin.consent import merkle

TYPE = "optin.ledger.checkpoint"
VERSION = 1


# --- keys ------------------------------------------------------------------------------


def private_key(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def encode_key(raw: bytes) -> str:
    """A key as OPTIN_LEDGER_SIGNING_KEY / OPTIN_LEDGER_PUBLIC_KEYS write it."""
    return base64.b64encode(raw).decode()


def decode_key(text: str) -> Ed25519PublicKey:
    """A base64 public key; ValueError if it is not one."""
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ValueError(f"not a base64 Ed25519 public key ({exc})") from None


def key_id(key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 over the raw public key: names it in a checkpoint."""
    return hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def keyring(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    return {key_id(k): k for k in keys}


# --- statements and lines --------------------------------------------------------------


def canonical(statement: Mapping[str, Any]) -> bytes:
    """The bytes that are signed and time-stamped."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def statement_hash(statement: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical statement: the next checkpoint's ``prev``."""
    return hashlib.sha256(canonical(statement)).hexdigest()


@dataclass(frozen=True)
class Published:
    """One published checkpoint."""

    statement: dict[str, Any]
    signature: str
    public_key: str
    tsa_token: str | None = None

    @property
    def n(self) -> int:
        return int(self.statement["n"])

    def line(self) -> str:
        return json.dumps({"type": TYPE, "checkpoint": self.statement, "signature": self.signature,
                           "public_key": self.public_key, "tsa_token": self.tsa_token},
                          sort_keys=True, separators=(",", ":"))


def sign(statement: dict[str, Any], key: Ed25519PrivateKey) -> Published:
    return Published(statement=statement,
                     signature=base64.b64encode(key.sign(canonical(statement))).decode(),
                     public_key=encode_key(public_bytes(key.public_key())))


def _from_object(data: Any) -> Published | None:
    if not isinstance(data, dict) or data.get("type") != TYPE:
        return None
    statement = data.get("checkpoint")
    if not isinstance(statement, dict) or not isinstance(data.get("signature"), str):
        raise ValueError("a checkpoint line without its statement or signature")
    return Published(statement=statement, signature=data["signature"],
                     public_key=str(data.get("public_key") or ""),
                     tsa_token=data.get("tsa_token") or None)


def parse_line(line: str) -> Published | None:
    """The checkpoint in a line of the file, or of a log that quotes it (JSON or text
    logs); None for any other line. ValueError for a checkpoint line that is broken."""
    if TYPE not in line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("type") != TYPE and isinstance(data.get("message"), str):
        line, data = data["message"], None  # a JSON log record whose message quotes it
    if data is None:
        start = line.find('{"checkpoint"')
        if start < 0:
            raise ValueError("a line names a checkpoint but holds none")
        data, _ = json.JSONDecoder().raw_decode(line[start:])
    return _from_object(data)


def read(path: Path) -> tuple[list[Published], list[str]]:
    """Every checkpoint in the file, in file order, and the lines that could not be read."""
    found: list[Published] = []
    problems: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            try:
                entry = parse_line(line)
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{path.name} line {number}: unreadable checkpoint ({exc})")
                continue
            if entry is not None:
                found.append(entry)
    return found, problems


def last_published(path: Path) -> Published | None:
    """The file's newest checkpoint, read from its end (the file only grows)."""
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 64 * 1024))
        tail = handle.read().decode("utf-8", "replace").splitlines()
    for line in reversed(tail):
        try:
            entry = parse_line(line)
        except (ValueError, KeyError, TypeError):
            continue
        if entry is not None:
            return entry
    return None


def append(path: Path, entry: Published) -> None:
    """Append one line and make it durable before the checkpoint counts as published."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(entry.line() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# --- checking --------------------------------------------------------------------------


def check_entry(entry: Published, keys: Mapping[str, Ed25519PublicKey]) -> list[str]:
    """Problems of one checkpoint on its own: signature, key, time-stamp (empty = good).

    Only ``keys`` count: the public key written beside the signature is a
    convenience for readers, never trusted by itself.
    """
    where = f"checkpoint {entry.statement.get('n')}"
    kid = entry.statement.get("key_id")
    key = keys.get(str(kid))
    if key is None:
        return [f"{where}: signed by key {kid}, which is not a trusted key "
                "(add its public key to OPTIN_LEDGER_PUBLIC_KEYS); refused"]
    try:
        key.verify(base64.b64decode(entry.signature, validate=True), canonical(entry.statement))
    except (InvalidSignature, ValueError):
        return [f"{where}: its signature does not verify with key {kid}; refused"]
    if entry.tsa_token:
        # Imported here: asn1crypto and X.509 cost every `optin` command a fifth of a second.
        from optin.consent import timestamps

        try:
            timestamps.check_token(base64.b64decode(entry.tsa_token), canonical(entry.statement))
        except (timestamps.TimestampError, ValueError) as exc:
            return [f"{where}: its RFC 3161 time-stamp does not check: {exc}"]
    return []


def check_sequence(entries: Sequence[Published],
                   keys: Mapping[str, Ed25519PublicKey]) -> tuple[list[Published], list[str], list[str]]:
    """The valid checkpoints by number, the problems, and notes (gaps in the file).

    Two different checkpoints with one number mean the service was made to build
    on a database that had lost its checkpoints: a problem, as is a ``prev``
    that does not match the checkpoint before it.
    """
    problems: list[str] = []
    notes: list[str] = []
    by_n: dict[int, Published] = {}
    for entry in entries:
        bad = check_entry(entry, keys)
        if bad:
            problems.extend(bad)
            continue
        seen = by_n.get(entry.n)
        if seen is not None and canonical(seen.statement) != canonical(entry.statement):
            problems.append(f"checkpoint {entry.n} was published twice with different roots "
                            "(the database lost its checkpoints and started again)")
        by_n.setdefault(entry.n, entry)
    ordered = [by_n[n] for n in sorted(by_n)]
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.n != before.n + 1:
            notes.append(f"checkpoints {before.n + 1}..{after.n - 1} are not in the file")
        elif after.statement.get("prev") != statement_hash(before.statement):
            problems.append(f"checkpoint {after.n} does not follow checkpoint {before.n} (prev)")
    return ordered, problems, notes


def check_inclusion(entry: Published, leaf: Mapping[str, Any], path: Sequence[Sequence[str]]) -> bool:
    """Whether ``leaf`` (``subscription_id``, ``seq``, ``chain_hash``) is in the checkpoint."""
    data = merkle.leaf_data(int(leaf["subscription_id"]), int(leaf["seq"]), str(leaf["chain_hash"]))
    return merkle.root_from_path(data, path) == entry.statement.get("root")


# --- the standalone check ---------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optin.consent.checkpoint_file",
        description="Check published ledger checkpoints (signatures, sequence, time-stamps) "
                    "and optionally a proof's Merkle path, without the service's database.")
    parser.add_argument("file", type=Path, help="the checkpoint file (or a log that quotes it)")
    parser.add_argument("--public-key", action="append", required=True, metavar="BASE64",
                        help="a trusted public key (repeat for earlier keys)")
    parser.add_argument("--proof", type=Path, metavar="JSON",
                        help="a proof's checkpoint section (or the whole proof JSON)")
    args = parser.parse_args(argv)
    try:
        keys = keyring(decode_key(k) for k in args.public_key)
    except ValueError as exc:
        parser.error(str(exc))
    entries, problems = read(args.file)
    ordered, bad, notes = check_sequence(entries, keys)
    problems += bad
    for note in notes:
        print(f"note: {note}")
    if args.proof:
        problems += _check_proof(json.loads(args.proof.read_text()), {e.n: e for e in ordered})
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    last = ordered[-1].statement if ordered else None
    print(f"{len(ordered)} checkpoints verified"
          + (f", newest {last['n']} at {last['at']}: {last['tree_size']} chains, root {last['root']}"
             if last else ""))
    return 1 if problems or not ordered else 0


def _sections(proof: Any) -> Iterable[dict[str, Any]]:
    """Every checkpoint section in a proof JSON (one per consent cycle), or the section."""
    if isinstance(proof, dict) and "merkle_path" in proof:
        yield proof
    elif isinstance(proof, dict):
        for cycle in proof.get("consents") or []:
            if isinstance(cycle, dict) and isinstance(cycle.get("checkpoint"), dict):
                yield cycle["checkpoint"]


def _check_proof(proof: Any, by_n: Mapping[int, Published]) -> list[str]:
    problems: list[str] = []
    sections = list(_sections(proof))
    if not sections:
        return ["the proof names no checkpoint"]
    cycles = {c["checkpoint"]["leaf"]["subscription_id"]: c
              for c in (proof.get("consents") or []) if isinstance(proof, dict)
              and isinstance(c, dict) and isinstance(c.get("checkpoint"), dict)}
    for section in sections:
        entry = by_n.get(int(section["checkpoint"]))
        leaf = section["leaf"]
        cycle = cycles.get(leaf["subscription_id"])
        shown = _chain_problems(cycle, leaf, section["checkpoint"]) if cycle else []
        if entry is None:
            problems.append(f"checkpoint {section['checkpoint']} is not in the file")
        elif not check_inclusion(entry, leaf, section["merkle_path"]):
            problems.append(f"subscription {leaf['subscription_id']}'s chain head is not in "
                            f"checkpoint {entry.n}")
        elif shown:
            problems.extend(shown)
        else:
            print(f"subscription {leaf['subscription_id']}: events #1..#{leaf['seq']} are in "
                  f"checkpoint {entry.n} (root {entry.statement['root']})")
    return problems


GENESIS = "0" * 64


def event_content(subscription_id: int, event: Mapping[str, Any]) -> str:
    """An event's content as the ledger hashes it (``ledger.canonical_content``), from the
    event as a proof's JSON shows it."""
    at = datetime.fromisoformat(str(event["at"])).isoformat(timespec="microseconds")
    content = {"subscription_id": subscription_id, "seq": event["seq"], "kind": event["kind"],
               "at": at, "ip": event.get("ip"), "user_agent": event.get("user_agent"),
               "consent_text_id": event.get("consent_text_id"), "origin": event.get("origin"),
               "details": event.get("details") or {}}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _chain_problems(cycle: Mapping[str, Any], leaf: Mapping[str, Any], n: Any) -> list[str]:
    """The cycle's events as the proof shows them, held to the head checkpoint ``n`` signed.

    Without this the check said "events #1..#N are in checkpoint n" of whatever events a
    proof listed (an edited copy, or a history altered and re-hashed): the leaf alone is
    in the checkpoint. Each shown event must hash as recorded (a minimized one cannot be
    checked: its content is gone), the hashes must chain, and the chain must reach the
    signed head at its number.
    """
    where = f"subscription {leaf['subscription_id']}"
    sub_id, problems, previous = int(leaf["subscription_id"]), [], None
    events = sorted(cycle.get("events") or [], key=lambda e: int(e["seq"]))
    for expected, event in enumerate(events, 1):
        seq = int(event["seq"])
        if seq != expected:
            return [f"{where}: event #{expected} is not in the proof"]
        if not event.get("redacted_at") and hashlib.sha256(
                event_content(sub_id, event).encode()).hexdigest() != event.get("content_hash"):
            problems.append(f"{where}: event #{seq} as the proof shows it does not hash as "
                            "recorded (altered)")
        previous_text = previous or GENESIS
        chained = hashlib.sha256(f"{previous_text}|{seq}|{event.get('content_hash')}".encode())
        if chained.hexdigest() != event.get("chain_hash"):
            return [*problems, f"{where}: the chain is broken at event #{seq}"]
        previous = event["chain_hash"]
        if seq == int(leaf["seq"]) and previous != leaf["chain_hash"]:
            problems.append(f"{where}: events #1..#{seq} as the proof shows them are not what "
                            f"checkpoint {n} signed (altered and re-hashed)")
    if len(events) < int(leaf["seq"]):
        problems.append(f"{where}: event #{leaf['seq']}, signed by checkpoint {n}, is not in "
                        "the proof")
    return problems


if __name__ == "__main__":
    sys.exit(main())
