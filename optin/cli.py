"""The ``optin`` command group (also reachable as ``flask --app optin …``).

Commands call the same domain functions as the HTTP views; they print plain
text for people and exit non-zero when something is wrong.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from flask_migrate import upgrade
from werkzeug.serving import run_simple

from optin import checks
from optin.activecampaign import (
    backfill,
    reconcile,
)
from optin.activecampaign import imports as ac_imports
from optin.activecampaign.client import ActiveCampaignError
from optin.config import DEVELOPMENT_OPERATOR, Settings, current_settings
from optin.consent import checkpoint_file, checkpoints, ledger, lists
from optin.consent import stats as consent_stats
from optin.consent.addresses import SMTPUTF8_WHEN_OFFERED
from optin.delivery import breaker, mailbox, outbox
from optin.delivery.worker import DESTINATIONS_EXTENSION, Worker
from optin.extensions import db
from optin.models import LOCALES, MailingList, utcnow
from optin.ops import metrics
from optin.privacy import (
    document,
    exports,
    import_files,
    imports,
    proof,
    proof_export,
    retention,
    rights,
)
from optin.schemas import BacklogSchema, ListDetailSchema, ProofSchema, ReceiptSchema
from optin.web import embed

# The commands live on ``app.cli`` (see init_app), so ``flask --app optin …`` and
# the test runner see them too.
commands: list[click.Command] = []


@click.command("serve")
@with_appcontext
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--no-worker", is_flag=True, help="Do not deliver the outbox in this process.")
def serve(host: str, port: int, no_worker: bool) -> None:
    """Development server with an in-process worker.

    In development it also brings the database up to date and creates the
    demo list ``newsletter``, so the whole flow works with no set-up, and links
    in mails point to ``--port`` unless OPTIN_BASE_URL says otherwise.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = current_settings()
    if settings.development and not settings.base_url_set:
        # Links in mails and the embed snippet point to this server, on the port it serves.
        base = urlsplit(settings.base_url)
        settings = settings.model_copy(update={"base_url": f"{base.scheme}://{base.hostname}:{port}"})
        app.extensions["optin.settings"] = settings
    if settings.development:
        upgrade()
        lists.ensure_demo_list()
        click.echo(f"Mail goes to {settings.mail_url}")
        if urlsplit(settings.base_url).port != port:
            click.echo(f"Note: links in mails point to OPTIN_BASE_URL={settings.base_url}; "
                       f"set it to http://{host}:{port} (or unset it) to follow them to "
                       "this server.")
        click.echo(f"Demo page: http://{host}:{port}/  (mail folder: /dev/mail)")
        _echo_development_token(settings)
    if not no_worker:
        worker = Worker(app)
        threading.Thread(target=worker.run, name="optin-worker", daemon=True).start()
    # run_simple rather than app.run(): Flask ignores app.run() inside its own CLI.
    run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=False)


def _echo_development_token(settings: Settings) -> None:
    """Print the generated operator token, so the README's operator calls can be tried.

    On the terminal only, never in a log (the log formatter blanks every token).
    """
    token = next((t for t, name in settings.admin_tokens.items() if name == DEVELOPMENT_OPERATOR),
                 None)
    if token is not None:
        click.echo(f"Operator API token (development, kept in {settings.instance_path / 'admin_token'}):"
                   f"\n  export TOKEN={token}")


@click.command("worker")
@with_appcontext
@click.option("--once", is_flag=True, help="Deliver what is due, then exit.")
@click.option("--batch", type=click.IntRange(1, 1000), default=None,
              help="Rows a delivery thread claims at a time (default 16; with --once, the "
                   "whole batch: 16 a thread, at least 20).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics on this port (for hosts without a web process).")
@click.option("--metrics-host", default="0.0.0.0", show_default=True,  # noqa: S104
              help="Address the metrics port listens on.")
def worker_command(once: bool, batch: int | None, metrics_port: int | None, metrics_host: str) -> None:
    """Deliver the outbox (mails, ActiveCampaign) until SIGTERM."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    worker = Worker(app, batch=batch)
    if metrics_port:
        metrics.serve(app, metrics_port, metrics_host)
    if once:
        click.echo(f"delivered {worker.drain()} outbox rows")
        return
    worker.install_signal_handlers()
    worker.run()


# --- lists ---------------------------------------------------------------------------

lists_group = AppGroup("lists", help="Mailing lists.")
commands.append(lists_group)


def _list_or_exit(slug: str) -> MailingList:
    mailing_list = lists.get_list(slug)
    if mailing_list is None:
        raise click.ClickException(f"no list {slug!r} (see `optin lists list`)")
    return mailing_list


@lists_group.command("create")
@click.argument("slug")
@click.option("--name", help="Name shown to subscribers (default: OPTIN_BRAND_NAME).")
@click.option("--ac-list-id", type=int, help="ActiveCampaign list id.")
@click.option("--redirect-url", multiple=True, help="Allowed thank-you URL (repeatable).")
@click.option("--origin", multiple=True, help="Origin of a landing page (repeatable).")
@click.option("--locale", default="de", show_default=True, type=click.Choice(LOCALES))
@click.option("--welcome/--no-welcome", default=True, show_default=True,
              help="Send the welcome mail after confirmation.")
@click.option("--goodbye/--no-goodbye", default=False, show_default=True,
              help="Send a goodbye mail after unsubscribe.")
@click.option("--sender", help="From of this list's mails, e.g. 'Example News <news@example.com>' "
              "(default: OPTIN_MAIL_FROM).")
@click.option("--reply-to", help="Reply-To of this list's mails (default: none).")
def lists_create(slug: str, name: str | None, ac_list_id: int | None, redirect_url: tuple[str, ...],
                 origin: tuple[str, ...], locale: str, welcome: bool, goodbye: bool,
                 sender: str | None, reply_to: str | None) -> None:
    """Create a list."""
    try:
        mailing_list = lists.create_list(
            slug, name or current_settings().brand_name, ac_list_id=ac_list_id,
            redirect_urls=redirect_url, origins=origin,
            default_locale=locale, send_welcome=welcome, send_goodbye=goodbye,
            sender=sender, reply_to=reply_to,
        )
    except lists.ListError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created list {mailing_list.slug}; add its consent texts with "
               f"`optin consent-texts add {mailing_list.slug} --locale de --text …`")


@lists_group.command("list")
def lists_list() -> None:
    """All lists."""
    for mailing_list in lists.all_lists():
        click.echo(f"{mailing_list.slug}\t{mailing_list.name}\tac={mailing_list.ac_list_id or '-'}")


@lists_group.command("update")
@click.argument("slug")
@click.option("--name", help="Name shown to subscribers.")
@click.option("--ac-list-id", type=int, help="ActiveCampaign list id.")
@click.option("--redirect-url", multiple=True,
              help="Allowed thank-you URL (repeatable; replaces the list's URLs).")
@click.option("--origin", multiple=True,
              help="Origin of a landing page (repeatable; replaces the list's origins).")
@click.option("--locale", type=click.Choice(LOCALES), help="Default locale.")
@click.option("--welcome/--no-welcome", default=None, help="Send the welcome mail.")
@click.option("--goodbye/--no-goodbye", default=None, help="Send the goodbye mail.")
@click.option("--sender", help="From of this list's mails; '' = OPTIN_MAIL_FROM.")
@click.option("--reply-to", help="Reply-To of this list's mails; '' = none.")
@click.option("--privacy-policy-url", help="Privacy policy linked from forms and pages; '' = none.")
@click.option("--controller", help="Controller named in consent receipts, e.g. 'Example GmbH, "
              "Berlin'; '' = the brand name.")
@click.option("--purpose", help="Purpose named in consent receipts; '' = 'Newsletter … by email'.")
@click.option("--website-url", help="The list's website: the confirmed page and the welcome "
              "mail lead there; '' = none.")
@click.option("--imprint-url", help="Imprint linked in page and mail footers; '' = none.")
@click.option("--postal-address", help="The controller's postal address in page and mail "
              "footers (\\n between lines); '' = OPTIN_CONTROLLER_ADDRESS.")
@click.option("--sender-name", help="Display name in From: when --sender names none; "
              "'' = OPTIN_BRAND_NAME.")
def lists_update(slug: str, name: str | None, ac_list_id: int | None,
                 redirect_url: tuple[str, ...], origin: tuple[str, ...], locale: str | None,
                 welcome: bool | None, goodbye: bool | None, sender: str | None,
                 reply_to: str | None, privacy_policy_url: str | None, controller: str | None,
                 purpose: str | None, website_url: str | None, imprint_url: str | None,
                 postal_address: str | None, sender_name: str | None) -> None:
    """Change a list's settings (only the options given)."""
    mailing_list = _list_or_exit(slug)
    given = {
        "name": name, "ac_list_id": ac_list_id, "default_locale": locale,
        "send_welcome": welcome, "send_goodbye": goodbye, "sender": sender,
        "reply_to": reply_to, "privacy_policy_url": privacy_policy_url,
        "controller": controller, "purpose": purpose, "website_url": website_url,
        "imprint_url": imprint_url, "postal_address": postal_address, "sender_name": sender_name,
        "redirect_urls": list(redirect_url) or None, "origins": list(origin) or None,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    if not changes:
        raise click.UsageError("nothing to change: give at least one option")
    try:
        lists.update_list(mailing_list, **changes)
    except lists.ListError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"updated list {slug}: {', '.join(sorted(changes))}")


@lists_group.command("show")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--embed", "as_embed", is_flag=True,
              help="Print the HTML signup form to paste into a landing page.")
@click.option("--locale", type=click.Choice(LOCALES),
              help="Language of the --embed form (default: the list's).")
@click.option("--page-url", metavar="URL",
              help="The page the --embed form goes on (on one of the list's origins): "
              "without JavaScript, \"Back\" on the thank-you and error pages leads there.")
def lists_show(slug: str, as_json: bool, as_embed: bool, locale: str | None,
               page_url: str | None) -> None:
    """One list with its consent texts, or (--embed) its signup form."""
    mailing_list = _list_or_exit(slug)
    if as_embed:
        if not mailing_list.origins:
            click.echo(f"warning: list {slug!r} has no landing-page origin, so the form can "
                       "only post without JavaScript (embed.js falls back to a plain post); "
                       f"add yours with `optin lists update {slug} --origin "
                       "https://www.example.com`", err=True)
        try:
            click.echo(embed.snippet(mailing_list, locale or mailing_list.default_locale,
                                     current_settings().base_url, page_url), nl=False)
        except embed.EmbedError as exc:
            raise click.ClickException(str(exc)) from None
        return
    info = ListDetailSchema().dump(mailing_list)  # the same as GET /v1/lists/<slug>
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    for key, value in info.items():
        if key not in ("consent_texts", "current_consent_texts"):
            click.echo(f"{key}: {value}")
    # Counted apart: consents recorded here, and those brought in by `optin import`
    # (GET /v1/stats has the same under "consents").
    for origin, by_status in consent_stats.consents_by_origin(slug)[slug].items():
        click.echo(f"consents {origin}: " + (", ".join(f"{status} {n}" for status, n in
                                                       sorted(by_status.items())) or "none"))
    for t in info["consent_texts"]:
        click.echo(f"consent text {t['locale']} v{t['version']} ({t['sha256'][:12]}…): {t['text']}")


# --- consent texts ----------------------------------------------------------------------

texts_group = AppGroup("consent-texts", help="Versioned consent texts.")
commands.append(texts_group)


@texts_group.command("add")
@click.argument("slug")
@click.option("--locale", required=True, type=click.Choice(LOCALES))
@click.option("--text", help="The exact wording the form shows.")
@click.option("--file", "path", type=click.File(encoding="utf-8"), help="Read the text from a file.")
@click.option("--privacy-policy-version", help="Version of the privacy policy the form links.")
def texts_add(slug: str, locale: str, text: str | None, path: TextIO | None,
              privacy_policy_version: str | None) -> None:
    """Add a new current consent text version."""
    if (text is None) == (path is None):
        raise click.UsageError("give exactly one of --text or --file")
    wording = text if path is None else path.read()
    assert wording is not None
    mailing_list = _list_or_exit(slug)
    try:
        consent = lists.add_consent_text(mailing_list, locale, wording, privacy_policy_version)
    except lists.ListError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{slug} {locale}: consent text version {consent.version} ({consent.sha256})")


# --- ledger -----------------------------------------------------------------------------

ledger_group = AppGroup("ledger", help="The consent ledger.")
commands.append(ledger_group)


@ledger_group.command("verify")
@click.option("--checkpoints", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="The published checkpoints (or a log quoting them); default: "
                   "OPTIN_LEDGER_CHECKPOINT_FILE.")
@click.option("--all", "every", is_flag=True,
              help="Check the database against every published checkpoint, not only the newest.")
def ledger_verify(path: Path | None, every: bool) -> None:
    """Check every hash chain, and the database against the published checkpoints;
    exit 1 if anything was modified, reordered or deleted, or a checkpoint is refused."""
    report = ledger.verify(db.session())
    anchored = checkpoints.verify(path, every=every)
    db.session.rollback()
    for note in anchored.notes:
        click.echo(f"note: {note}", err=True)
    for problem in report.problems:
        click.echo(f"TAMPERED: {problem}", err=True)
    for problem in anchored.problems:
        click.echo(f"CHECKPOINT: {problem}", err=True)
    ok = report.ok and not anchored.problems
    newest = anchored.newest.statement if anchored.newest else None
    click.echo(f"ledger {'OK' if ok else 'FAILED'}: {report.subscriptions} subscriptions, "
               f"{report.events} events, {len(report.problems) + len(anchored.problems)} problems; "
               + (f"{anchored.checkpoints} checkpoints in {anchored.path}, newest {newest['n']} "
                  f"({newest['at']}, {newest['tree_size']} chains)" if newest
                  else "no published checkpoint"))
    if not ok:
        sys.exit(1)


@ledger_group.command("checkpoint")
def ledger_checkpoint() -> None:
    """Sign a checkpoint of every chain head now and publish it."""
    try:
        made = checkpoints.make(reason="cli")
    except (checkpoints.CheckpointsOff, checkpoints.CheckpointRefused) as exc:
        raise click.ClickException(str(exc)) from None
    record = made.record
    click.echo(f"checkpoint {record.id}: {record.tree_size} chains ({made.moved} moved), "
               f"root {record.root}, key {record.key_id}"
               f"{', RFC 3161 time-stamped' if record.tsa_token else ''}")
    for held in made.held:
        click.echo(f"TAMPERED: subscription {held} does not extend the head the previous "
                   "checkpoint signed; that head is kept", err=True)
    if made.publish_problems:
        for problem in made.publish_problems:
            click.echo(f"not published: {problem}", err=True)
        sys.exit(1)
    click.echo(f"published to {current_settings().ledger_checkpoint_file}")
    if made.held:
        sys.exit(1)


@ledger_group.command("public-key")
def ledger_public_key() -> None:
    """The signing key's public key (base64) and id: what an outsider checks with."""
    try:
        key = checkpoints.signing_key().public_key()
    except checkpoints.CheckpointsOff as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{checkpoint_file.encode_key(checkpoint_file.public_bytes(key))}\t"
               f"key id {checkpoint_file.key_id(key)}")


@ledger_group.command("new-key")
def ledger_new_key() -> None:
    """A new signing key for OPTIN_LEDGER_SIGNING_KEY (private: stdout only), and its public
    key (stderr). See the README's "Key rotation"."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    click.echo(checkpoint_file.encode_key(seed))
    public = key.public_key()
    click.echo(f"public key {checkpoint_file.encode_key(checkpoint_file.public_bytes(public))} "
               f"(key id {checkpoint_file.key_id(public)})", err=True)


# --- outbox -----------------------------------------------------------------------------

outbox_group = AppGroup("outbox", help="The delivery queue and its dead letters.")
commands.append(outbox_group)


@outbox_group.command("list")
@click.option("--dead", is_flag=True, help="Only dead letters.")
@click.option("--pending", is_flag=True, help="Only rows waiting for delivery.")
@click.option("--limit", default=50, show_default=True)
def outbox_list(dead: bool, pending: bool, limit: int) -> None:
    """Recent outbox rows, newest first."""
    status = outbox.DEAD if dead else outbox.PENDING if pending else None
    destinations = current_app.extensions.get(DESTINATIONS_EXTENSION, {})
    open_now = {state.destination for state in breaker.states() if state.is_open}
    paused = {kind for kind, destination in destinations.items() if destination in open_now}
    now = utcnow()
    for item in outbox.items(status, limit):
        why = outbox.waiting_reason(item, now, paused)
        if why == "breaker open":
            why = f"breaker open ({destinations[item.kind]})"
        click.echo(f"{item.id}\t{item.kind}\t{item.status}\tattempts={item.attempts}\t"
                   f"next={item.next_attempt_at:%Y-%m-%d %H:%M:%S}\t{item.last_error or ''}"
                   f"{chr(9) + 'waiting: ' + why if why else ''}")
    for state in breaker.states():
        if state.is_open:
            click.echo(f"breaker {state.destination} open since {state.opened_at:%H:%M:%S} "
                       f"({state.failures} failures, {state.probes} probes): "
                       f"{state.last_error or ''}", err=True)
    click.echo(json.dumps(BacklogSchema().dump(outbox.backlog())), err=True)


@outbox_group.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Every dead letter.")
def outbox_retry(ids: tuple[int, ...], retry_all: bool) -> None:
    """Queue dead letters again after fixing their cause."""
    if not ids and not retry_all:
        raise click.UsageError("name outbox ids or pass --all")
    count = outbox.retry_dead(list(ids) or None)
    click.echo(f"{count} dead letters queued again")


# --- retention ------------------------------------------------------------------------

retention_group = AppGroup("retention", help="Retention: minimize what has lapsed.")
commands.append(retention_group)


def _as_of(value: str | None) -> datetime | None:
    """ISO date or date-time; without a zone it is UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO date or date-time: {value!r}", param_hint="--now") from None
    try:  # in UTC here: a time whose zone puts it outside UTC's years failed in the database
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise click.BadParameter(f"{value!r} is outside the years 1 to 9999 in UTC",
                                 param_hint="--now") from None


@retention_group.command("run")
@click.option("--now", "now", metavar="ISO-DATE",
              help="Decide what has lapsed as of this time (UTC unless it names a zone); "
                   "a future time only with --dry-run.")
@click.option("--dry-run", is_flag=True, help="Count per rule; change nothing.")
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Subscriptions per transaction.")
def retention_run(now: str | None, dry_run: bool, batch: int) -> None:
    """Minimize lapsed records (safe to run from cron on several hosts at once).

    A ``--now`` in the future is refused unless ``--dry-run``: minimizing as of a later
    day destroys proof whose limitation period has not run out (exit code 2)."""
    as_of = _as_of(now)
    if as_of is not None and as_of > utcnow() and not dry_run:
        raise click.BadParameter(
            f"{as_of.isoformat()} is in the future: minimizing as of then would destroy proof "
            "before it lapses. Add --dry-run to count what would lapse then.",
            param_hint="--now")
    report = retention.run(as_of, dry_run=dry_run, batch=batch)
    verb = "would minimize" if dry_run else "minimized"
    click.echo(f"retention run {report.run_id} as of {report.as_of.isoformat()}"
               f"{' (dry run, nothing changed)' if dry_run else ''}")
    for rule in retention.RULES:
        click.echo(f"  {rule}: {verb} {report.counts.get(rule, 0)}")
    if not dry_run:
        click.echo(f"  events redacted: {report.counts.get('events_redacted', 0)}")


@retention_group.command("runs")
@click.option("--limit", default=20, show_default=True)
def retention_runs(limit: int) -> None:
    """The last runs: when, as of when, where, what they did."""
    for run in retention.recent_runs(limit):
        click.echo(f"{run.id}\t{run.started_at:%Y-%m-%d %H:%M:%S}\tas_of={run.as_of.isoformat()}\t"
                   f"{'dry' if run.dry_run else 'real'}\t{run.host}\t{json.dumps(run.counts)}")


# --- proof of consent --------------------------------------------------------------------


@click.command("proof")
@with_appcontext
@click.argument("email", required=False)
@click.option("--list", "slug", required=True, help="List slug.")
@click.option("--format", "fmt", default="text", show_default=True,
              type=click.Choice(["text", "json", "html", "pdf", "receipt"]))
@click.option("--locale", type=click.Choice(["de", "en"]),
              help="Language of the proof: text, html and pdf (default: the list's).")
@click.option("--out", "out", type=click.Path(writable=True),
              help="Write to this file instead of standard output (with --all: a folder).")
@click.option("--all", "every", is_flag=True,
              help="Audit export: every proof of the list as PDF and JSON into --out, with "
                   "manifest.json and SHA256SUMS.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="With --all: PDF layout processes (default: one per CPU).")
@click.option("--actor", default=None, help="Name recorded in the audit trail (default: cli:$USER).")
def proof_command(email: str | None, slug: str, fmt: str, locale: str | None, out: str | None,
                  every: bool, workers: int | None, actor: str | None) -> None:
    """Print the proof of consent of EMAIL on a list (audited), or with --all export every
    proof of the list."""
    actor = actor or f"cli:{getpass.getuser()}"
    if every:
        _export(slug, out, locale, workers, actor, email)
        return
    if email is None:
        raise click.UsageError("name an EMAIL, or --all for every proof of the list")
    if fmt == "pdf" and out is None and sys.stdout.isatty():
        raise click.ClickException("a PDF is not for the terminal: --out FILE, or redirect it")
    try:
        record = proof.build(email, slug, actor, purpose=fmt)
        if fmt == "receipt":
            click.echo(json.dumps(ReceiptSchema().dump(proof.receipt(record)), indent=2,
                                  ensure_ascii=False))
            return
    except (rights.InvalidAddress, proof.UnknownList, proof.NoConsent) as exc:
        raise click.ClickException(str(exc) if not isinstance(exc, proof.UnknownList)
                                   else f"no list {slug!r} (see `optin lists list`)") from None
    chosen = document.choose_locale(locale, lists.get_list(slug))
    output: str | bytes
    if fmt == "json":
        output = json.dumps(ProofSchema().dump(record), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "html":
        output = document.render_html(record, chosen)[0]
    elif fmt == "pdf":
        output = document.render_pdf(record, chosen)
    else:
        output = proof.render_text(record, chosen) + "\n"
    if out is not None:
        Path(out).write_bytes(output if isinstance(output, bytes) else output.encode())
    elif isinstance(output, bytes):
        sys.stdout.buffer.write(output)
        sys.stdout.flush()
    else:
        click.echo(output, nl=False)
    if not record["ledger_ok"]:
        sys.exit(1)


def _export(slug: str, out: str | None, locale: str | None, workers: int | None, actor: str,
            email: str | None) -> None:
    if email is not None or out is None:
        raise click.UsageError("--all exports a whole list into a folder: --all --out DIR, no EMAIL")
    mailing_list = _list_or_exit(slug)
    total = len(proof_export.addresses(mailing_list.id))
    with click.progressbar(length=total, label=f"proofs of {slug}", file=sys.stderr,
                           show_pos=True, show_eta=True) as bar:
        try:
            manifest = proof_export.export_list(slug, Path(out), actor, locale=locale,
                                                workers=workers, progress=bar.update)
        except BrokenProcessPool:
            raise click.ClickException(
                f"a PDF layout process died (killed, or out of memory?) after {bar.pos} of "
                f"{total} proofs: {out} holds an unfinished export without manifest.json; "
                "run the export again (fewer --workers if memory is short)") from None
    minimized = manifest["minimized_addresses"]
    click.echo(f"{manifest['proofs']} proofs written to {out} (manifest.json, SHA256SUMS); "
               f"ledger {'intact' if manifest['ledger_ok'] else 'VERIFICATION FAILED'}"
               + (f"; {minimized} minimized addresses have no proof left (listed in manifest.json)"
                  if minimized else ""))
    if not manifest["ledger_ok"]:
        sys.exit(1)


commands.extend([serve, worker_command, proof_command])
# --- ActiveCampaign ------------------------------------------------------------------------

ac_group = AppGroup("ac", help="ActiveCampaign: bulk sync and drift repair.")
commands.append(ac_group)


def _ac_lists(slug: str | None) -> list:
    """The named list, or every list mapped to an ActiveCampaign list."""
    if slug:
        mailing_list = _list_or_exit(slug)
        if mailing_list.ac_list_id is None:
            raise click.ClickException(f"list {slug!r} has no ActiveCampaign list id")
        return [mailing_list]
    found = [m for m in lists.all_lists() if m.ac_list_id is not None]
    if not found:
        raise click.ClickException("no list has an ActiveCampaign list id "
                                   "(`optin lists create SLUG --ac-list-id ID`)")
    return found


@ac_group.command("backfill")
@click.option("--list", "slug", help="Only this list (default: every list with an AC list id).")
@click.option("--batch", default=250, show_default=True, type=click.IntRange(1, 250),
              help="Contacts per bulk import.")
@click.option("--restart", is_flag=True, help="Ignore where an interrupted run stopped.")
@click.option("--retries", default=5, show_default=True, type=click.IntRange(0, 100),
              help="Retries of a failing import before the run stops (to be resumed).")
def ac_backfill(slug: str | None, batch: int, restart: bool, retries: int) -> None:
    """Push every confirmed contact (and every withdrawal, as unsubscribed) in bulk imports.

    Resumable: an interrupted run continues where it stopped when run again.
    """
    if current_settings().ac_dry_run:
        click.echo("dry-run: OPTIN_AC_URL is unset; nothing is sent, each would-be import "
                   "is logged and ledgered as skipped")
    trouble = False
    for mailing_list in _ac_lists(slug):
        after = None if restart else backfill.cursor(mailing_list)
        if after:
            click.echo(f"{mailing_list.slug}: resuming after subscription {after}")
        interrupted = None
        with click.progressbar(length=backfill.remaining(mailing_list, after),
                               label=f"{mailing_list.slug} -> ActiveCampaign list "
                                     f"{mailing_list.ac_list_id}") as bar:
            try:
                summary = backfill.backfill(mailing_list, batch=batch, restart=restart,
                                            retries=retries, progress=bar.update)
            except backfill.BackfillInterrupted as exc:
                summary, interrupted = exc.summary, exc
        click.echo(f"{mailing_list.slug}: sent {summary.sent}, skipped {summary.skipped}, "
                   f"failed {summary.failed} ({summary.requests} requests)")
        if interrupted is not None:
            click.echo(f"{mailing_list.slug}: interrupted: {interrupted}; run the same command "
                       "again to resume", err=True)
        elif summary.failed:
            click.echo(f"{mailing_list.slug}: ActiveCampaign rejected {summary.failed} contacts "
                       "(see the log); fix them and run again with --restart", err=True)
        trouble = trouble or interrupted is not None or summary.failed > 0
    if trouble:
        sys.exit(1)


@ac_group.command("reconcile")
@click.option("--list", "slug", help="Only this list (default: every list with an AC list id).")
@click.option("--dry-run", is_flag=True, help="Report the drift; change nothing.")
def ac_reconcile(slug: str | None, dry_run: bool) -> None:
    """Compare ActiveCampaign's list members with the consent records and repair the drift."""
    if current_settings().ac_dry_run:
        click.echo("dry-run: OPTIN_AC_URL is unset; there is no ActiveCampaign list to compare")
        return
    for mailing_list in _ac_lists(slug):
        try:
            report = reconcile.reconcile(mailing_list, dry_run=dry_run)
        except ActiveCampaignError as exc:
            raise click.ClickException(f"{mailing_list.slug}: {exc}") from None
        suffix = " (dry run: nothing changed)" if dry_run else ""
        click.echo(f"{report.list_slug} <-> ActiveCampaign list {report.ac_list_id}: "
                   f"{report.members} members compared{suffix}")
        for kind, (drift, done, would) in reconcile.KINDS.items():
            found = [f for f in report.findings if f.kind == kind]
            if found:
                click.echo(f"  {drift}: {len(found)} ({would if dry_run else done})")
                for f in found:
                    click.echo(f"    {f.email or '(address minimized)'}"
                               f"{f' (contact {f.ac_contact_id})' if f.ac_contact_id else ''}")
        if not report.findings:
            click.echo("  no drift")


# --- mail (development) -------------------------------------------------------------------

mail_group = AppGroup("mail", help="Development: the mails the file backend wrote.")
commands.append(mail_group)


@mail_group.command("last")
@click.option("--to", "to", metavar="ADDRESS", help="The last mail to this address.")
@click.option("--links", "only_links", is_flag=True,
              help="Print only its links, decoded, one a line.")
def mail_last(to: str | None, only_links: bool) -> None:
    """The last mail written to the mail folder: headers and text, decoded."""
    folder = mailbox.folder_of(current_app.extensions["optin.mail_backend"])
    if folder is None:
        raise click.ClickException("mail goes out by SMTP (OPTIN_MAIL_URL): only a file:// "
                                   "mail folder keeps mails to read")
    mail = mailbox.last(folder, to)
    if mail is None:
        raise click.ClickException(f"no mail{' to that address' if to else ''} in {folder} yet")
    if only_links:
        for link in mail.links:
            click.echo(link)
    else:
        click.echo(mail.as_text(), nl=False)


# --- check -------------------------------------------------------------------------------


@click.command("check")
@with_appcontext
@click.option("--send-to", metavar="ADDRESS", help="Also send a test mail to this address.")
def check_command(send_to: str | None) -> None:
    """Try every outside part with the real settings; exit 0 only if all pass."""
    results = checks.run_all(current_settings(), send_to=send_to)
    click.echo(checks.table(results))
    if checks.failed(results):
        sys.exit(1)


commands.append(check_command)


# --- import and export of consents ------------------------------------------------------

import_group = AppGroup("import", help="Bring existing consents in, with their evidence.")
commands.append(import_group)


def _import_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed([
        click.option("--list", "slug", required=True, help="List slug."),
        click.option("--dry-run", is_flag=True, help="Count what would happen; change nothing."),
        click.option("--report", "report", type=click.Path(dir_okay=False, path_type=Path),
                     help="File for the rejected rows (line and reason; default: "
                          "./optin-import-<list>-rejected.csv)."),
        click.option("--batch", default=imports.BATCH, show_default=True,
                     type=click.IntRange(1, 50_000), help="Rows per transaction."),
        click.option("--restart", is_flag=True, help="Ignore where an interrupted run stopped."),
        click.option("--actor", default=None,
                     help="Operator recorded in the ledger and audit (default: cli:$USER)."),
    ]):
        command = option(command)
    return command


@contextlib.contextmanager
def _interrupt_between_rows() -> Iterator[Callable[[], None]]:
    """Ctrl-C stops an import at its next row, through the ``check`` this yields, not
    wherever the signal lands: a KeyboardInterrupt raised inside a finalizer (SQLAlchemy
    cleans its instance states from weakref callbacks) is printed as "Exception ignored"
    and swallowed, and the import then ran to its end as if nobody had asked. A second
    Ctrl-C stops at once, as the default does."""
    asked = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # no signals here
        yield lambda: None
        return

    def ask(signum: int, frame: object) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()

    def check() -> None:
        if asked.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_import(make: Callable[[MailingList], imports.Source], slug: str, dry_run: bool,
                report: Path | None, batch: int, restart: bool, actor: str | None) -> None:
    mailing_list = _list_or_exit(slug)
    try:
        source = make(mailing_list)
        total = source.count()
    except (import_files.ImportFileError, ac_imports.NotMapped, ActiveCampaignError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted before the import began: nothing changed", err=True)
        sys.exit(130)
    actor = actor or f"cli:{getpass.getuser()}"
    report = report or Path(f"optin-import-{mailing_list.slug}-rejected.csv")
    state = None if restart or dry_run else imports.cursor(mailing_list, source)
    if state:
        click.echo(f"resuming after row {state['done']} of {total} (interrupted run of "
                   f"{state.get('at', '?')})")
    try:
        with _interrupt_between_rows() as check, \
                click.progressbar(length=total, label=f"{source.label} -> {mailing_list.slug}",
                                  file=sys.stderr) as bar:

            def progress(rows: int) -> None:
                bar.update(rows)
                check()

            summary = imports.run(source, mailing_list, operator=actor, dry_run=dry_run,
                                  batch=batch, report=report, restart=restart,
                                  progress=progress)
    except KeyboardInterrupt:
        # Read again: an interrupted statement may have cost the session its connection.
        done = imports.cursor(_list_or_exit(slug), source)
        click.echo(f"\ninterrupted: {done['done'] if done else 0} rows committed; run the "
                   "same command again to resume", err=True)
        sys.exit(130)
    except (import_files.ImportFileError, ActiveCampaignError) as exc:
        raise click.ClickException(str(exc)) from None
    heading = "dry run, nothing changed: would be" if dry_run else "done"
    click.echo(f"{summary.source} {summary.label} -> list {summary.list_slug} ({heading}), "
               f"{summary.rows} rows" + (f", file SHA-256 {summary.sha256}" if summary.sha256 else ""))
    for category, meaning in imports.CATEGORIES.items():
        click.echo(f"  {meaning}: {summary.counts[category]}")
    if summary.report is not None:
        click.echo(f"rejected rows (line and reason): {summary.report}")


@import_group.command("mailchimp")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_import_options
@click.option("--field", "fields", multiple=True, metavar="COLUMN=NAME",
              help="Keep a merge field column as a field (repeatable), e.g. 'Company=company'.")
@click.option("--encoding", default="utf-8-sig", show_default=True)
def import_mailchimp(path: Path, slug: str, dry_run: bool, report: Path | None, batch: int,
                     restart: bool, actor: str | None, fields: tuple[str, ...],
                     encoding: str) -> None:
    """A Mailchimp audience export: the zip, or its subscribed/unsubscribed/cleaned CSVs."""
    try:
        field_map = import_files.parse_field_map(fields)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--field") from None
    smtputf8 = current_settings().smtputf8 == SMTPUTF8_WHEN_OFFERED
    _run_import(lambda _: import_files.MailchimpExport(path, field_map=field_map,
                                                       smtputf8=smtputf8, encoding=encoding),
                slug, dry_run, report, batch, restart, actor)


@import_group.command("csv")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_import_options
@click.option("--encoding", default="utf-8-sig", show_default=True)
def import_csv(path: Path, slug: str, dry_run: bool, report: Path | None, batch: int,
               restart: bool, actor: str | None, encoding: str) -> None:
    """The generic CSV (columns in the README; `optin export` writes the same)."""
    smtputf8 = current_settings().smtputf8 == SMTPUTF8_WHEN_OFFERED
    _run_import(lambda _: import_files.GenericCSV(path, smtputf8=smtputf8, encoding=encoding),
                slug, dry_run, report, batch, restart, actor)


@import_group.command("activecampaign")
@_import_options
def import_activecampaign(slug: str, dry_run: bool, report: Path | None, batch: int,
                          restart: bool, actor: str | None) -> None:
    """The members of the list's ActiveCampaign list (its --ac-list-id) optin does not know."""
    smtputf8 = current_settings().smtputf8 == SMTPUTF8_WHEN_OFFERED
    _run_import(lambda m: ac_imports.ActiveCampaignList(m, smtputf8=smtputf8),
                slug, dry_run, report, batch, restart, actor)


@click.command("export")
@with_appcontext
@click.option("--list", "slug", required=True, help="List slug.")
@click.option("--format", "fmt", default="csv", show_default=True, type=click.Choice(["csv"]))
@click.option("--output", "output", default="-", type=click.File("w", encoding="utf-8"),
              help="File to write (default: standard output).")
@click.option("--actor", default=None, help="Name recorded in the audit trail (default: cli:$USER).")
def export_command(slug: str, fmt: str, output: TextIO, actor: str | None) -> None:
    """The list in the generic import's columns, plus optin's own evidence (audited)."""
    mailing_list = _list_or_exit(slug)
    summary = exports.export_csv(mailing_list, output, actor=actor or f"cli:{getpass.getuser()}")
    click.echo(f"exported {summary.rows} subscriptions of list {slug} "
               f"({summary.skipped} pending or minimized left out)", err=True)


commands.append(export_command)


def init_app(app: Flask) -> None:
    for command in commands:
        app.cli.add_command(command)
