"""The proof of consent as a document a court reads: HTML with its style inlined, and A4 PDF.

One template (``templates/proof/document.html``) in German or English
(:mod:`optin.privacy.wording`), always from the built-in templates: an
operator's ``OPTIN_TEMPLATE_DIR`` may restyle pages and mails, never what a
proof shows. The stylesheet is inlined in every HTML proof, so a saved file
prints as served; the running header (controller, address hash, document id)
and "page x of y" are ``@page`` margin boxes written into that stylesheet as
plain strings, which Chromium and WeasyPrint both print. Dates are in the
proof's time zone (``OPTIN_PROOF_TIMEZONE``), in the reader's language, with the
zone named and UTC beside them (babel's CLDR data).

The PDF is WeasyPrint's, from the same HTML, on A4.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from optin.config import TEMPLATE_DIR, current_settings
from optin.ops.dates import local_date, local_datetime
from optin.ops.pages import HasLocale, pick_locale
from optin.privacy.wording import CHANNELS, EVENTS, LABELS, LEGAL_NOTES, WITHDRAWN_VIA, ProofLocale
from optin.schemas import ProofSchema

STYLESHEET = Path(__file__).parents[1] / "static" / "proof.css"


def choose_locale(requested: str | None, mailing_list: HasLocale | None = None) -> ProofLocale:
    """The proof's language: ``requested`` (``--locale``, ``?locale=``), else as a page's
    (the browser's Accept-Language, the list's default), else English."""
    return pick_locale(requested, mailing_list)


def when(value: str | datetime | None, locale: ProofLocale, zone: str) -> Markup:
    """``1. Dezember 2026, 08:41:04 Uhr (MEZ, UTC+1)`` with the UTC time beside it."""
    if not value:
        return Markup("–")
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = local_datetime(moment, locale, zone, precise=True)
    utc = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{iso}">{text}</time> <span class="utc">{utc}</span>').format(
        iso=moment.astimezone(UTC).isoformat(), text=text, utc=utc)


def day(value: str | datetime | None, locale: ProofLocale, zone: str) -> str:
    """The date alone, for a sentence: ``15. Dezember 2026``."""
    if not value:
        return "–"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return local_date(moment, locale, zone)


def css_string(value: str) -> str:
    """``value`` as a CSS string literal: every character outside a safe few escaped, so
    no controller name can end the string, the rule or the ``<style>`` element."""
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-_()")
    return '"' + "".join(c if c in safe else f"\\{ord(c):06x}" for c in value) + '"'


def _page_rules(record: dict[str, Any], labels: dict[str, str]) -> str:
    """The running header and footer of every printed page, as ``@page`` margin boxes."""
    controller = record["controller"]["name"] or record["list"]["controller"] or ""
    header = f"{labels['document_id']} {record['document_id']}"
    address = f"{labels['address_hash']}: {record['address_hash']}"
    page = css_string(labels["page"] + " ")
    of = css_string(" " + labels["of"] + " ")
    return (
        "@page {"
        f" @top-left {{ content: {css_string(controller)}; }}"
        f" @top-right {{ content: {css_string(header)}; }}"
        f" @bottom-left {{ content: {css_string(address)}; }}"
        f" @bottom-right {{ content: {page} counter(page) {of} counter(pages); }}"
        " }"
    )


@functools.cache
def _environment() -> Environment:
    """The built-in templates only (see the module's docstring)."""
    return Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)),
                       autoescape=select_autoescape(default=True), keep_trailing_newline=True)


@functools.cache
def _stylesheet() -> str:
    return STYLESHEET.read_text()


def stylesheet(record: dict[str, Any], locale: ProofLocale) -> str:
    """The whole style of one proof: the sheet, then its running header and footer."""
    return _stylesheet() + "\n" + _page_rules(record, LABELS[locale]) + "\n"


def style_source(css: str) -> str:
    """The CSP source that allows exactly this inline style (``'sha256-…'``)."""
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return f"'sha256-{digest}'"


def render_html(proof: Any, locale: ProofLocale) -> tuple[str, str]:
    """The proof as one self-contained HTML document, and its inline stylesheet (for the
    Content-Security-Policy that allows it). ``proof`` is ``proof.build()``'s record."""
    return render_record(ProofSchema().dump(proof), locale, current_settings().proof_timezone)


def render_record(record: dict[str, Any], locale: ProofLocale, zone: str) -> tuple[str, str]:
    """:func:`render_html` of a proof as the JSON has it (``ProofSchema().dump``): needs
    no app, so the audit export renders in processes of its own."""
    css = stylesheet(record, locale)
    labels = LABELS[locale]
    html = _environment().get_template("proof/document.html").render(
        # Ours, and every value in it escaped by css_string: safe inside <style>.
        proof=record, css=Markup(css), locale=locale, t=labels,  # noqa: S704
        events=EVENTS[locale], channels=CHANNELS[locale],
        withdrawn_via=WITHDRAWN_VIA[locale], notes=LEGAL_NOTES[locale],
        when=lambda value: when(value, locale, zone), day=lambda value: day(value, locale, zone))
    return html, css


@functools.cache
def _fonts() -> Any:
    """WeasyPrint's font configuration, made once per process (it scans the system's
    fonts, which costs more than laying out a proof)."""
    from weasyprint.text.fonts import FontConfiguration

    # It warns about every rule it knows it skips (the stylesheet's screen-only media
    # query), once per document: noise in the log of an audit export.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    return FontConfiguration()


def render_pdf(proof: Any, locale: ProofLocale) -> bytes:
    """The proof as an A4 PDF, laid out by WeasyPrint from the same HTML."""
    return pdf_of(render_html(proof, locale)[0])


def pdf_of(html: str) -> bytes:
    """The PDF of a proof's HTML (:func:`render_record`): no app needed."""
    from weasyprint import HTML

    fonts = _fonts()
    pdf: bytes = HTML(string=html, base_url=str(TEMPLATE_DIR)).write_pdf(font_config=fonts)
    return pdf
