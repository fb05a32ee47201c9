"""Read consent exports from files: a Mailchimp audience export and the generic CSV.

Every file is read by the ``csv`` module (a BOM, ``;`` or tab separators found by
``csv.Sniffer``, quoted newlines inside a field), streamed record by record, so a
file of any size needs the memory of one batch. Each record becomes an
:class:`~optin.privacy.import_rows.ImportRow` or a
:class:`~optin.privacy.import_rows.Rejected` naming its line.

Mailchimp's audience export is a zip of ``subscribed_…``, ``unsubscribed_…`` and
``cleaned_…`` CSVs (``…_members_export_…`` or ``…_email_audience_export_…``),
read in that order; one of the CSVs alone works too. Its columns: ``Email
Address`` (or ``EMAIL``), ``First Name``/``FNAME``, ``Last Name``/``LNAME``,
``MEMBER_RATING``, ``OPTIN_TIME``, ``OPTIN_IP``, ``CONFIRM_TIME``, ``CONFIRM_IP``,
``LAST_CHANGED``, ``LEID``, ``EUID``, ``UNSUB_TIME``/``CLEAN_TIME`` and their campaign
and reason columns, location columns (dropped: no proof needs them), ``NOTES``,
``TAGS`` (dropped) and the audience's merge fields (kept only where the operator
maps them: ``--field COLUMN=NAME``).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from optin.privacy.import_rows import (
    CLEANED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    BadValue,
    ImportRow,
    Rejected,
    address,
)

SNIFF_BYTES = 64 * 1024
#: Files in a zip beyond which it is no audience export (Mailchimp's holds three or four
#: CSVs): each member is read several times, each time through the zip's directory, so a
#: small zip of thousands of members took minutes per thousand.
MAX_ZIP_MEMBERS = 100
DELIMITERS = ",;\t|"
csv.field_size_limit(1 << 20)  # a 1 MB field is a broken file, not a row


class ImportFileError(ValueError):
    """The file as a whole cannot be read (not a CSV, no address column, not UTF-8)."""


#: What a damaged zip raises while a member is read (a bad CRC, a cut-off or corrupt
#: stream) or a file that cannot be read at all; opening a member can also raise
#: RuntimeError (encrypted) or NotImplementedError (a compression method zipfile lacks).
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


def _unreadable(name: str, exc: BaseException) -> ImportFileError:
    """The operator's message for a file or zip member that cannot be read: a reason, and
    what to do, never a traceback (nothing of the file's content is in it)."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ImportFileError(f"{name} cannot be read ({reason}); export it again as a plain "
                           "(unencrypted) zip or CSV")


def sha256_of(path: Path) -> str:
    """SHA-256 of the file's bytes, read in chunks: what the ledger names the file by."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise _unreadable(path.name, exc) from None
    return digest.hexdigest()


def _dialect(sample: str) -> type[csv.Dialect]:
    """Excel's dialect with the separator the header line uses: the commonest of
    ``, ; tab |`` in it (``csv.Sniffer`` guesses from whole records, and a quoted newline or
    a ragged row throws it off; header names hold no separators)."""
    header = sample.splitlines()[0] if sample else ""
    delimiter = max(DELIMITERS, key=header.count) if any(d in header for d in DELIMITERS) else ","

    class Dialect(csv.excel):
        pass

    Dialect.delimiter = delimiter
    return Dialect


@contextmanager
def _text(opener: Callable[[], IO[bytes]], encoding: str) -> Iterator[IO[str]]:
    try:
        codecs.lookup(encoding)  # --encoding is the operator's text: a typo is a message
    except LookupError:
        raise ImportFileError(f"unknown encoding {encoding!r} (try utf-8 or cp1252)") from None
    raw = opener()
    try:
        yield io.TextIOWrapper(raw, encoding=encoding, newline="")
    finally:
        raw.close()


def records(opener: Callable[[], IO[bytes]], member: str,
            encoding: str = "utf-8-sig") -> Iterator[tuple[int, int, dict[str, str] | None]]:
    """``(line, row, values)`` for each record of a CSV; ``values`` None for a record
    with more fields than the header. ``line`` is where the record starts."""
    try:
        with _text(opener, encoding) as handle:
            dialect = _dialect(handle.read(SNIFF_BYTES))
        with _text(opener, encoding) as handle:
            # NUL is no text (no database can hold it). It is kept here, so that a value
            # holding one is checked as given: an address with a NUL is refused, not turned
            # into another address; free text drops it when stored (models.storable_text).
            # strict: a quote opened and never closed is an error at the end of the file,
            # where the lenient reader made the rest of the file one field (rows lost).
            reader = csv.reader(handle, dialect, strict=True)
            header = next(reader, None)
            if header is None:
                return
            header = [h.replace("\0", "").strip() for h in header]
            row, start = 0, reader.line_num + 1
            for fields in reader:
                row += 1
                if not any(f.strip() for f in fields):  # a blank line
                    start = reader.line_num + 1
                    continue
                values = (dict(zip(header, fields, strict=False))
                          if len(fields) <= len(header) else None)
                yield start, row, values
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise ImportFileError(f"{member} is not {encoding} text; save it as UTF-8 "
                              "(or pass --encoding)") from None
    except csv.Error as exc:
        raise ImportFileError(f"{member}: not a readable CSV ({exc})") from None
    except _DAMAGED as exc:
        raise _unreadable(member, exc) from None


def _lines(opener: Callable[[], IO[bytes]], member: str) -> int:
    """Lines after the header: the records, for a progress bar (a quoted newline makes it
    one more; the summary counts records exactly). Bytes counted, nothing parsed; it
    reads every byte, so a damaged zip is refused here, before anything is imported."""
    lines, last = 0, b"\n"
    try:
        with opener() as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except _DAMAGED as exc:
        raise _unreadable(member, exc) from None
    return max(lines + (last != b"\n") - 1, 0)


def _header_of(opener: Callable[[], IO[bytes]], member: str, encoding: str) -> set[str]:
    """The column names of a CSV's header line."""
    try:
        with _text(opener, encoding) as handle:
            sample = handle.read(SNIFF_BYTES)
    except UnicodeDecodeError:
        raise ImportFileError(f"{member} is not {encoding} text; save it as UTF-8 "
                              "(or pass --encoding)") from None
    except _DAMAGED as exc:
        raise _unreadable(member, exc) from None
    header = next(csv.reader(io.StringIO(sample.replace("\0", "")), _dialect(sample)), [])
    return {h.strip() for h in header}


def _first(values: Mapping[str, str], *names: str) -> tuple[str | None, str | None]:
    """(value, column) of the first of ``names`` present with a value."""
    for name in names:
        value = values.get(name)
        if value is not None and value.strip():
            return value, name
    return None, None


def _column_of(header: set[str], *names: str) -> str:
    return next((n for n in names if n in header), names[0])


# --- Mailchimp -------------------------------------------------------------------------

MC_EMAIL = ("Email Address", "EMAIL", "E-Mail-Adresse", "Email")
MC_FIRST = ("First Name", "FNAME", "Vorname")
MC_LAST = ("Last Name", "LNAME", "Nachname")
MC_ROLES = {"signup_time": ("OPTIN_TIME",), "signup_ip": ("OPTIN_IP",),
            "confirm_time": ("CONFIRM_TIME",), "confirm_ip": ("CONFIRM_IP",)}
MC_WITHDRAWN = {UNSUBSCRIBED: "UNSUB_TIME", CLEANED: "CLEAN_TIME"}
#: Mailchimp's own columns kept as evidence, as given (besides the roles above).
MC_EXTRA = ("MEMBER_RATING", "LAST_CHANGED", "LEID", "EUID", "UNSUB_CAMPAIGN_TITLE",
            "UNSUB_CAMPAIGN_ID", "UNSUB_REASON", "UNSUB_REASON_OTHER", "CLEAN_CAMPAIGN_TITLE",
            "CLEAN_CAMPAIGN_ID")
#: Mailchimp's columns that are no proof of anything, never kept.
MC_DROPPED = ("LATITUDE", "LONGITUDE", "GMTOFF", "DSTOFF", "TIMEZONE", "CC", "REGION", "NOTES",
              "TAGS")
_MC_ORDER = {SUBSCRIBED: 0, UNSUBSCRIBED: 1, CLEANED: 2}


def mailchimp_status(name: str) -> str | None:
    """The status a Mailchimp export's file name says (``unsubscribed_members_export_…``)."""
    base = Path(name).name.lower()
    if base.startswith("nonsubscribed") or base.startswith("non_subscribed"):
        return "nonsubscribed"
    for status in (UNSUBSCRIBED, CLEANED, SUBSCRIBED):  # "unsubscribed" contains "subscribed"
        if base.startswith(status) or re.search(rf"(^|[_\-\s]){status}([_\-\s.]|$)", base):
            return status
    return None


class MailchimpExport:
    """A Mailchimp audience export: the zip, or one of its CSVs."""

    source = "mailchimp"

    def __init__(self, path: Path, *, field_map: Mapping[str, str] | None = None,
                 smtputf8: bool = False, encoding: str = "utf-8-sig") -> None:
        self.path, self.label = path, path.name
        self.field_map = dict(field_map or {})
        self.smtputf8, self.encoding = smtputf8, encoding
        self.sha256 = sha256_of(path)
        self.members = self._members()

    def _members(self) -> list[tuple[str, str, Callable[[], IO[bytes]]]]:
        """(name, status, opener) of each CSV, subscribed first."""
        if zipfile.is_zipfile(self.path):
            try:
                with zipfile.ZipFile(self.path) as archive:
                    if len(archive.infolist()) > MAX_ZIP_MEMBERS:
                        raise ImportFileError(
                            f"{self.label} holds {len(archive.infolist())} files, more than "
                            f"{MAX_ZIP_MEMBERS}: not a Mailchimp audience export (a few CSVs)")
                    names = [i.filename for i in archive.infolist()
                             if not i.is_dir() and i.filename.lower().endswith(".csv")
                             and not Path(i.filename).name.startswith(".")]
            except _DAMAGED as exc:
                raise _unreadable(self.label, exc) from None
            found = []
            for name in names:
                status = mailchimp_status(name)
                if status is None:
                    raise ImportFileError(f"{name}: not a subscribed, unsubscribed or cleaned "
                                          "export (the file name says which)")
                if status in _MC_ORDER:
                    found.append((name, status, self._zip_opener(name)))
            if not found:
                raise ImportFileError(f"{self.label}: no Mailchimp audience CSVs in the zip")
            for name, _, opener in found:
                self._check_header(name, opener)
            return sorted(found, key=lambda m: (_MC_ORDER[m[1]], m[0]))
        status = mailchimp_status(self.path.name)
        if status not in _MC_ORDER:
            raise ImportFileError(f"{self.label}: the file name does not say subscribed, "
                                  "unsubscribed or cleaned (as Mailchimp names its export's "
                                  "CSVs); rename it, e.g. subscribed_members.csv")
        assert status is not None
        self._check_header(self.path.name, lambda: self.path.open("rb"))
        return [(self.path.name, status, lambda: self.path.open("rb"))]

    def _check_header(self, name: str, opener: Callable[[], IO[bytes]]) -> None:
        """Refuse a CSV without an address column at once, rather than reject every row."""
        names = _header_of(opener, name, self.encoding)
        if names and not names & set(MC_EMAIL):
            raise ImportFileError(f"{name}: no address column ({' or '.join(MC_EMAIL[:2])})")

    def _zip_opener(self, name: str) -> Callable[[], IO[bytes]]:
        def opener() -> IO[bytes]:
            try:
                archive = zipfile.ZipFile(self.path)
            except _DAMAGED as exc:
                raise _unreadable(name, exc) from None
            try:
                inner = archive.open(name)
            except (*_DAMAGED, RuntimeError, NotImplementedError) as exc:
                archive.close()
                raise _unreadable(name, exc) from None
            close = inner.close

            def closing() -> None:
                close()
                archive.close()

            inner.close = closing  # type: ignore[method-assign]
            return inner
        return opener

    def count(self) -> int:
        return sum(_lines(opener, name) for name, _, opener in self.members)

    def rows(self) -> Iterator[ImportRow | Rejected]:
        for name, status, opener in self.members:
            for line, row, values in records(opener, name, self.encoding):
                if values is None:
                    yield Rejected(name, line, "malformed row: more fields than the header")
                    continue
                try:
                    yield self._row(name, status, line, row, values)
                except BadValue as exc:
                    yield Rejected(name, line, str(exc))

    def _row(self, name: str, status: str, line: int, row: int,
             values: dict[str, str]) -> ImportRow:
        raw, _ = _first(values, *MC_EMAIL)
        email, given = address(raw or "", smtputf8=self.smtputf8)
        header = set(values)
        evidence: dict[str, str | None] = {}
        columns: dict[str, str] = {}
        roles = {**MC_ROLES, **({"withdrawn_time": (MC_WITHDRAWN[status],)}
                                if status in MC_WITHDRAWN else {})}
        for role, names in roles.items():
            value, column = _first(values, *names)
            evidence[role] = value
            columns[role] = column or _column_of(header, *names)
        first, _ = _first(values, *MC_FIRST)
        last, _ = _first(values, *MC_LAST)
        fields = {target: values[column] for column, target in self.field_map.items()
                  if values.get(column, "").strip()}
        return ImportRow(
            member=name, line=line, row=row, email=email, email_given=given, status=status,
            evidence=evidence, columns=columns,
            extra={k: values[k] for k in MC_EXTRA if values.get(k, "").strip()},
            first_name=first, last_name=last, fields=fields or None)


# --- the generic CSV -------------------------------------------------------------------

#: The generic CSV's columns (the export writes the same): role or meaning -> column name.
CSV_COLUMNS = ("email", "status", "signup_time", "signup_ip", "confirm_time", "confirm_ip",
               "withdrawn_time", "consent_text", "consent_text_version", "source_url", "locale",
               "first_name", "last_name")
FIELD_PREFIX = "field:"
CSV_STATUSES = {"subscribed": SUBSCRIBED, "confirmed": SUBSCRIBED,
                "unsubscribed": UNSUBSCRIBED, "withdrawn": UNSUBSCRIBED,
                "cleaned": CLEANED, "bounced": CLEANED}
_CSV_ROLES = ("signup_time", "signup_ip", "confirm_time", "confirm_ip", "withdrawn_time",
              "consent_text", "consent_text_version", "source_url")


class GenericCSV:
    """The documented generic CSV (see the README): one row per address and list."""

    source = "csv"

    def __init__(self, path: Path, *, smtputf8: bool = False, encoding: str = "utf-8-sig",
                 locales: tuple[str, ...] = ("de", "en")) -> None:
        self.path, self.label = path, path.name
        self.smtputf8, self.encoding, self.locales = smtputf8, encoding, locales
        self.sha256 = sha256_of(path)
        self._check_header()

    def _opener(self) -> IO[bytes]:
        return self.path.open("rb")

    def _check_header(self) -> None:
        names = _header_of(self._opener, self.label, self.encoding)
        if "email" not in names or "status" not in names:
            raise ImportFileError(f"{self.label}: the generic CSV needs the columns email and "
                                  f"status (found: {', '.join(sorted(names)) or 'none'})")

    def count(self) -> int:
        return _lines(self._opener, self.label)

    def rows(self) -> Iterator[ImportRow | Rejected]:
        for line, row, values in records(self._opener, self.label, self.encoding):
            if values is None:
                yield Rejected(self.label, line, "malformed row: more fields than the header")
                continue
            try:
                yield self._row(line, row, values)
            except BadValue as exc:
                yield Rejected(self.label, line, str(exc))

    def _row(self, line: int, row: int, values: dict[str, str]) -> ImportRow:
        values = {k: spreadsheet_value(v) for k, v in values.items()}  # as optin export wrote
        email, given = address(values.get("email", ""), smtputf8=self.smtputf8)
        given_status = (values.get("status") or "").strip().lower()
        status = CSV_STATUSES.get(given_status)
        if status is None:
            raise BadValue(f"unknown status {given_status[:40]!r} (use one of "
                           f"{', '.join(sorted(CSV_STATUSES))})")
        locale = (values.get("locale") or "").strip().lower() or None
        if locale is not None and locale not in self.locales:
            raise BadValue(f"unknown locale {locale[:10]!r}")
        version = (values.get("consent_text_version") or "").strip()
        if version and not version.isdigit():
            raise BadValue("consent_text_version is not a whole number")
        evidence = {role: (values.get(role) if (values.get(role) or "").strip() else None)
                    for role in _CSV_ROLES}
        fields = {k[len(FIELD_PREFIX):]: v for k, v in values.items()
                  if k.startswith(FIELD_PREFIX) and v.strip()}
        return ImportRow(
            member=self.label, line=line, row=row, email=email, email_given=given,
            status=status, evidence=evidence, columns={role: role for role in _CSV_ROLES},
            first_name=(values.get("first_name") or "").strip() or None,
            last_name=(values.get("last_name") or "").strip() or None,
            fields=fields or None, locale=locale)


#: How a cell starts that a spreadsheet runs as a formula (OWASP's list for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _runs_as_formula(value: str) -> bool:
    """Whether :func:`spreadsheet_safe` quotes ``value``: a formula start, or a quote before
    one (so that :func:`spreadsheet_value` gives back exactly what was written)."""
    quotes = len(value) - len(value.lstrip("'"))
    return value[quotes:quotes + 1] in FORMULA_STARTS and value[quotes:quotes + 1] != ""


def spreadsheet_safe(value: str) -> str:
    """A CSV cell no spreadsheet runs: a value starting like a formula (``=HYPERLINK(…)``
    in a user agent a visitor sent) gets a ``'`` before it, which spreadsheets read as
    "this is text" and hide. :func:`spreadsheet_value` reverses it exactly."""
    return "'" + value if _runs_as_formula(value) else value


def spreadsheet_value(cell: str) -> str:
    """The value :func:`spreadsheet_safe` wrote as ``cell``."""
    return cell[1:] if cell[:1] == "'" and _runs_as_formula(cell[1:]) else cell


def parse_field_map(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``COLUMN=NAME`` pairs (``--field``) as a mapping; raises ValueError on a bad one."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, name = pair.partition("=")
        if not sep or not column.strip() or not name.strip():
            raise ValueError(f"--field takes COLUMN=NAME, not {pair!r}")
        mapping[column.strip()] = name.strip()
    return mapping

