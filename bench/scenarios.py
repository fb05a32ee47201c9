"""The scenarios: each measures optin and its baseline in the same run and returns table rows."""

from __future__ import annotations

import itertools
import math
import smtplib
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlalchemy as sa

from . import data, loadgen
from .stack import (
    ROOT,
    Process,
    children,
    engine,
    free_port,
    fresh_database,
    gunicorn,
    listening_socket,
    prepare_service_database,
    rss_mb,
    service_env,
    wait_for_port,
    wait_ready,
)

LOGS = Path(tempfile.gettempdir()) / "optin-bench-logs"


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    figure: str  # what is measured, with its unit
    value: float
    baseline: float | None
    baseline_label: str
    target: str
    passed: bool
    ratio: float | None = None
    notes: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Size:
    quick: bool

    def pick(self, full: float, quick: float) -> int:
        return int(quick if self.quick else full)


def _log(name: str) -> Path:
    LOGS.mkdir(parents=True, exist_ok=True)
    return LOGS / f"{name}.log"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- signups and confirmations ----------------------------------------------------------


@contextmanager
def baseline_server() -> Iterator[str]:
    """The bare Flask + one INSERT app under the same gunicorn settings, warmed up."""
    url = fresh_database("optin_bench_baseline")
    from .baseline_app import SCHEMA

    with engine(url).begin() as conn:
        conn.execute(sa.text(SCHEMA))
    env = service_env(url, BENCH_DATABASE_URL=url)
    with gunicorn("bench.baseline_app:app", env, log=_log("baseline")) as (_, base):
        loadgen.run(base, loadgen.SIGNUP, seconds=2, env={"BENCH_RUN": "warm"})
        yield base


def interleaved(sides: dict[str, Callable[[int], loadgen.WrkResult]], rounds: int
                ) -> dict[str, loadgen.WrkResult]:
    """Alternate the sides' wrk runs (A B A B …) so a change in the machine's load
    (other jobs share the cores) hits both alike; sum requests and time, median p99."""
    results: dict[str, list[loadgen.WrkResult]] = {name: [] for name in sides}
    for i in range(rounds):
        for name, run in sides.items():
            results[name].append(run(i))
    merged = {}
    for name, runs in results.items():
        p99s = sorted(r.p99_ms for r in runs)
        p50s = sorted(r.p50_ms for r in runs)
        merged[name] = loadgen.WrkResult(
            requests=sum(r.requests for r in runs), seconds=sum(r.seconds for r in runs),
            p50_ms=p50s[len(p50s) // 2], p99_ms=p99s[len(p99s) // 2],
            errors=sum(r.errors for r in runs), cpu_seconds=sum(r.cpu_seconds for r in runs))
    return merged


def headroom(seconds: float) -> loadgen.WrkResult:
    """wrk against a trivial endpoint (bench/trivial.py): what the generator can do here."""
    with listening_socket() as sock, Process(
            [sys.executable, "-m", "bench.trivial", f"fd://{sock.fileno()}"],
            log=_log("trivial"), pass_fds=(sock.fileno(),)) as proc:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        wait_ready(url, proc)
        result = loadgen.run(f"{url}/", loadgen.TRIVIAL, seconds=seconds)
    say(f"generator: {result.rate:,.0f} req/s against a trivial endpoint")
    return result


def signups(size: Size) -> list[Row]:
    rounds, seconds = size.pick(3, 2), size.pick(8, 3)
    capacity = headroom(size.pick(5, 2))
    url = fresh_database("optin_bench_signups")
    prepare_service_database(url)
    run_id = uuid.uuid4().hex[:6]
    with baseline_server() as bare, \
            gunicorn("wsgi:app", service_env(url), log=_log("signups")) as (_, base):
        loadgen.run(base, loadgen.SIGNUP, seconds=2, env={"BENCH_RUN": "warm"})
        both = interleaved({
            "baseline": lambda i: loadgen.run(bare, loadgen.SIGNUP, seconds=seconds,
                                              env={"BENCH_RUN": f"{run_id}b{i}"}),
            "optin": lambda i: loadgen.run(base, loadgen.SIGNUP, seconds=seconds,
                                           env={"BENCH_RUN": f"{run_id}o{i}"}),
        }, rounds)
    baseline, result = both["baseline"], both["optin"]
    with engine(url).connect() as conn:
        stored = conn.scalar(sa.text("SELECT count(*) FROM subscription"))
        queued = conn.scalar(sa.text("SELECT count(*) FROM outbox WHERE kind = 'signup_intake'"))
    say(f"baseline: {baseline.rate:.0f} signups/s, p99 {baseline.p99_ms:.1f} ms")
    say(f"optin: {result.rate:.0f} signups/s, p99 {result.p99_ms:.1f} ms, wrk used "
        f"{result.cpu_share:.0%} of a core ({queued} signups queued for the worker, {stored} subscriptions, "
        f"{result.errors} errors)")
    notes = {"wrk_errors": result.errors, "requests": result.requests,
             "generator_trivial_rps": round(capacity.rate),
             "generator_headroom": round(capacity.rate / max(result.rate, 1), 1),
             "wrk_cpu_share": round(result.cpu_share, 3),
             "baseline_requests": baseline.requests, "subscriptions_stored": stored,
             "signups_queued": queued,
             "p50_ms": result.p50_ms, "baseline_p50_ms": baseline.p50_ms}
    rate_ratio = result.rate / baseline.rate
    p99_ratio = result.p99_ms / baseline.p99_ms
    ok = result.errors == 0
    return [
        Row("signups", "signups/s", round(result.rate, 1), round(baseline.rate, 1),
            "bare Flask + 1 INSERT", "≥ 0.7×", ok and rate_ratio >= 0.7,
            round(rate_ratio, 2), notes),
        Row("signups", "p99 latency (ms)", round(result.p99_ms, 1), round(baseline.p99_ms, 1),
            "bare Flask + 1 INSERT", "≤ 2×", ok and p99_ratio <= 2.0, round(p99_ratio, 2)),
    ]


def confirmations(size: Size) -> list[Row]:
    rounds, seconds = size.pick(3, 2), size.pick(8, 3)
    pending = size.pick(40_000, 4_000)
    url = fresh_database("optin_bench_confirm")
    prepare_service_database(url)
    eng = engine(url)
    data.subscriptions(eng, pending, "pending")
    tokens = data.confirm_tokens(eng)
    slices = [tokens[500:][i::rounds] for i in range(rounds)]

    def confirmed() -> int:
        """Confirmations recorded or queued (the click commits a confirm_intake row; no
        worker runs here, so the rows wait)."""
        with eng.connect() as conn:
            return conn.scalar(sa.text(
                "SELECT (SELECT count(*) FROM subscription WHERE status = 'confirmed') + "
                "(SELECT count(*) FROM outbox WHERE kind = 'confirm_intake' "
                "AND status = 'pending')"))

    with tempfile.TemporaryDirectory() as tmp, baseline_server() as bare, \
            gunicorn("wsgi:app", service_env(url), log=_log("confirm")) as (_, base):
        Path(tmp, "warm").write_text("\n".join(tokens[:500]) + "\n")
        for i, chunk in enumerate(slices):
            Path(tmp, str(i)).write_text("\n".join(chunk) + "\n")
        loadgen.run(base, loadgen.CONFIRM, seconds=2, env={"BENCH_TOKENS": f"{tmp}/warm"})
        time.sleep(1)  # requests wrk left queued at its end still get served
        before = confirmed()
        run_id = uuid.uuid4().hex[:6]
        both = interleaved({
            "baseline": lambda i: loadgen.run(bare, loadgen.SIGNUP, seconds=seconds,
                                              env={"BENCH_RUN": f"{run_id}b{i}"}),
            "optin": lambda i: loadgen.run(base, loadgen.CONFIRM, seconds=seconds,
                                           env={"BENCH_TOKENS": f"{tmp}/{i}"}),
        }, rounds)
        time.sleep(2)  # requests wrk left queued at its end still get served
        done = confirmed() - before
    baseline, result = both["baseline"], both["optin"]
    # wrk's count of answered requests (every token is used once); the database's
    # count of confirmations, which includes requests still queued when wrk stopped,
    # is a check.
    rate = result.rate
    dry = result.requests > len(tokens) - 500
    say(f"baseline: {baseline.rate:.0f} signups/s")
    say(f"optin: {rate:.0f} confirmations/s ({done} confirmed of {result.requests} requests, "
        f"{result.errors} errors{', tokens ran dry' if dry else ''})")
    ratio = rate / baseline.rate
    return [Row("confirmations", "confirmations/s", round(rate, 1), round(baseline.rate, 1),
                "bare Flask + 1 INSERT", "≥ 0.6×", result.errors == 0 and ratio >= 0.6,
                round(ratio, 2), {"requests": result.requests, "confirmed": done,
                                  "tokens_ran_dry": dry, "p99_ms": result.p99_ms,
                                  "baseline_p99_ms": baseline.p99_ms})]


# --- confirmation mails -------------------------------------------------------------------


def _prerendered_mail(url: str, sink_url: str) -> tuple[str, str, bytes]:
    """One confirmation mail rendered by optin itself, as bytes, for the smtplib baseline."""
    from optin import create_app
    from optin.consent.tokens import CONFIRM, make_token
    from optin.delivery.mailer import build_message

    env = service_env(url, OPTIN_MAIL_URL=sink_url)
    env.pop("OPTIN_METRICS_DIR")  # this process imported prometheus-client without it
    app = create_app(env)
    with app.app_context():
        templates = app.extensions["optin.mail_templates"]
        rendered = templates.render("confirm", "de", {
            "list_name": "Newsletter", "first_name": "First1", "consent_text": "Ja, ich möchte …",
            "brand": app.extensions["optin.brand"], "locale": "de",
            "confirm_url": "http://127.0.0.1:8000/confirm/" + make_token("x" * 32, CONFIRM, 1, "n"),
            "ttl_hours": 72,
        })
        message = build_message(rendered, to_email="gen1@example.org", to_name="First1 Last1",
                                sender="newsletter@localhost")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))  # as smtplib sends it
    return "newsletter@localhost", "gen1@example.org", raw


def mails(size: Size) -> list[Row]:
    count = size.pick(5_000, 500)
    url = fresh_database("optin_bench_mail")
    prepare_service_database(url)
    eng = engine(url)
    data.subscriptions(eng, count, "pending")
    data.confirm_mails(eng)
    port = free_port()
    sink_url = f"smtp://127.0.0.1:{port}"
    sink = Process([sys.executable, "-m", "bench.smtp_sink", str(port)], log=_log("sink"))
    try:
        wait_for_port(port)
        sender, rcpt, raw = _prerendered_mail(url, sink_url)
        started = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            for _ in range(count):
                smtp.sendmail(sender, [rcpt], raw)
        baseline = count / (time.perf_counter() - started)
        say(f"baseline: smtplib loop, {baseline:.0f} mails/s")

        worker = Process([sys.executable, "-m", "optin", "worker"],
                         service_env(url, OPTIN_MAIL_URL=sink_url), log=_log("worker"))
        with worker:
            deadline = time.monotonic() + max(120, count / 5)
            while time.monotonic() < deadline:
                with eng.connect() as conn:
                    left = conn.scalar(sa.text("SELECT count(*) FROM outbox "
                                               "WHERE status = 'pending'"))
                if not left:
                    break
                time.sleep(0.25)
        with eng.connect() as conn:
            done, first, last = conn.execute(sa.text(
                "SELECT count(*), min(finished_at), max(finished_at) FROM outbox "
                "WHERE status = 'done'")).one()
            dead = conn.scalar(sa.text("SELECT count(*) FROM outbox WHERE status = 'dead'"))
    finally:
        sink.stop()
    received = _sink_count(sink)
    # From the first mail's commit to the last: excludes the worker's start-up.
    span = (last - first).total_seconds() if done > 1 else float("nan")
    rate = (done - 1) / span if span else 0.0
    say(f"optin worker: {rate:.0f} mails/s ({done} sent, {dead} dead, sink got {received})")
    ratio = rate / baseline
    return [Row("mails", "confirmation mails/s", round(rate, 1), round(baseline, 1),
                "smtplib loop, 1 connection", "≥ 0.8×",
                ratio >= 0.8 and done == count and received == 2 * count,
                round(ratio, 2), {"sent": done, "dead": dead, "sink_received": received})]


def _sink_count(sink: Process) -> int:
    assert sink.log is not None
    for line in sink.log.read_text().splitlines():
        if line.startswith("SINK "):
            return int(line.split()[1])
    return -1


# --- ActiveCampaign backfill --------------------------------------------------------------

AC_RATE = 5  # requests per second, the account's limit
AC_IMPORTS_PER_MINUTE = 100
BATCH = 250


def backfill_bound(contacts: int) -> tuple[int, float]:
    """Fewest requests and shortest time the limits allow: (requests, seconds).

    Requests: one bulk import per 250 contacts. Time: request k may start no
    earlier than k / 5 s and 60 s after request k - 100 (bulk import's own
    limit), measured from the first request's start to the last one's slot end.
    """
    requests = math.ceil(contacts / BATCH)
    starts: list[float] = []
    for k in range(requests):
        t = k / AC_RATE
        if k >= AC_IMPORTS_PER_MINUTE:
            t = max(t, starts[k - AC_IMPORTS_PER_MINUTE] + 60.0)
        starts.append(t)
    return requests, starts[-1] + 1 / AC_RATE


def backfill(size: Size) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    from tests.fake_activecampaign import FakeActiveCampaign

    contacts = size.pick(100_000, 5_000)
    url = fresh_database("optin_bench_backfill")
    prepare_service_database(url, ac_list_id=1)
    data.subscriptions(engine(url), contacts, "confirmed")
    bound_requests, bound_seconds = backfill_bound(contacts)
    with FakeActiveCampaign(lists={1: "Newsletter"}, rate_limit=AC_RATE,
                            bulk_imports_per_minute=AC_IMPORTS_PER_MINUTE) as ac:
        env = service_env(url, OPTIN_AC_URL=ac.url, OPTIN_AC_API_KEY=ac.api_key)
        started = time.perf_counter()
        with open(_log("backfill"), "wb") as log:
            subprocess.run([sys.executable, "-m", "optin", "ac", "backfill", "--list",
                            "newsletter"], env=env, cwd=ROOT, check=True, stdout=log, stderr=log)
        command_seconds = time.perf_counter() - started
        requests = list(ac.requests)
        limited = ac.rate_limited
        refused = sum(1 for r in requests if r.status == 400)
        imported = ac.contact_count
    span = requests[-1].time - requests[0].time + 1 / AC_RATE
    say(f"optin backfill: {len(requests)} requests in {span:.1f} s ({limited} × 429, "
        f"{refused} × 400; command {command_seconds:.1f} s); bound {bound_requests} requests, "
        f"{bound_seconds:.1f} s")
    starts = [r.time - requests[0].time for r in requests]
    pauses = [(round(a, 1), round(b - a, 1)) for a, b in itertools.pairwise(starts)
              if b - a > 1.0]
    notes = {"contacts": contacts, "imported": imported, "status_429": limited,
             "pauses_over_1s": pauses,
             "status_400": refused, "command_seconds": round(command_seconds, 1)}
    ok = imported == contacts
    return [
        Row("backfill", "requests to ActiveCampaign", len(requests), bound_requests,
            "ceil(contacts / 250)", "≤ bound + 1 %",
            ok and len(requests) <= bound_requests * 1.01, round(len(requests) / bound_requests, 3),
            notes),
        Row("backfill", "wall time (s)", round(span, 1), round(bound_seconds, 1),
            "5 req/s and 100 imports/min", "≤ 1.1×", ok and span <= 1.1 * bound_seconds,
            round(span / bound_seconds, 2)),
        Row("backfill", "429 answers", limited, 0, "none", "= 0", limited == 0, None),
    ]


# --- retention ----------------------------------------------------------------------------


def retention(size: Size) -> list[Row]:
    rows = size.pick(1_000_000, 20_000)
    url = fresh_database("optin_bench_retention")
    proc = subprocess.run(
        [sys.executable, "bench/retention_million.py", "--database-url", url,
         "--rows", str(rows), "--json"],
        cwd=ROOT, check=True, capture_output=True, text=True,
        env=service_env(url))
    (LOGS / "retention.log").write_text(proc.stdout + proc.stderr)
    result = next(__import__("json").loads(ln[5:]) for ln in proc.stdout.splitlines()
                  if ln.startswith("JSON "))
    ratio = result["optin_seconds"] / result["hand_seconds"]
    say(f"retention: optin {result['optin_seconds']:.1f} s, hand-written SQL "
        f"{result['hand_seconds']:.1f} s, ratio {ratio:.2f}")
    return [Row("retention", f"minimize {rows:,} lapsed (s)", round(result["optin_seconds"], 1),
                round(result["hand_seconds"], 1), "one hand-written SQL UPDATE", "≤ 2×",
                ratio <= 2.0, round(ratio, 2), result)]


# --- memory -------------------------------------------------------------------------------


def memory(size: Size) -> list[Row]:
    total = size.pick(100_000, 5_000)
    url = fresh_database("optin_bench_memory")
    prepare_service_database(url)
    eng = engine(url)

    def stored() -> int:
        with eng.connect() as conn:
            return conn.scalar(sa.text("SELECT count(*) FROM subscription"))

    # Production recycles workers every ~10,000 requests (gunicorn.conf.py); off here, so
    # the figure is the growth itself, not hidden by a restart.
    with gunicorn("wsgi:app", service_env(url), log=_log("memory"),
                  extra_args=("--max-requests", "0")) as (proc, base):
        workers = children(proc.pid)
        run = uuid.uuid4().hex[:6]
        while stored() < 1000:
            loadgen.run(base, loadgen.SIGNUP, seconds=2,
                        env={"BENCH_RUN": f"{run}a{stored()}", "BENCH_LIMIT": "250"})
        first = stored()
        early = {pid: rss_mb(pid) for pid in workers}
        say(f"after {first} signups: worker RSS {sorted(round(v, 1) for v in early.values())} MB")
        chunk = 0
        started = time.perf_counter()
        while stored() < total:
            chunk += 1
            loadgen.run(base, loadgen.SIGNUP, seconds=size.pick(30, 5),
                        env={"BENCH_RUN": f"{run}{chunk}"})
        elapsed = time.perf_counter() - started
        last = stored()
        if children(proc.pid) != workers:
            raise RuntimeError("a worker was restarted during the memory run")
        late = {pid: rss_mb(pid) for pid in workers}
    say(f"after {last} signups: worker RSS {sorted(round(v, 1) for v in late.values())} MB")
    growth = max(late[p] / early[p] for p in workers)
    peak = max(late.values())
    notes = {"signups_first": first, "signups_last": last, "workers": len(workers),
             "rss_early_mb": [round(early[p], 1) for p in workers],
             "rss_late_mb": [round(late[p], 1) for p in workers],
             "signups_per_second_meanwhile": round((last - first) / elapsed, 1)}
    return [Row("memory", f"worker RSS after {last:,} signups (MB)", round(peak, 1),
                round(max(early.values()), 1), f"after {first:,} signups",
                "≤ 1.2× and < 100 MB", growth <= 1.2 and peak < 100, round(growth, 2), notes)]


from .timing import mail_latency, timing  # noqa: E402  (it builds on the helpers above)

# --- imports ------------------------------------------------------------------------------


def _import_run(rows: int) -> dict[str, object]:
    url = fresh_database("optin_bench_imports")
    proc = subprocess.run(
        [sys.executable, "bench/imports_bench.py", "--database-url", url, "--rows", str(rows),
         "--json"], cwd=ROOT, check=True, capture_output=True, text=True, env=service_env(url))
    (LOGS / f"imports-{rows}.log").write_text(proc.stdout + proc.stderr)
    return next(__import__("json").loads(ln[5:]) for ln in proc.stdout.splitlines()
                if ln.startswith("JSON "))


def imports(size: Size) -> list[Row]:
    """``optin import mailchimp`` of a generated export against COPY of its rows, and its
    peak memory at a tenth of the size (each run its own process)."""
    rows, small = size.pick(100_000, 5_000), size.pick(10_000, 500)
    big, little = _import_run(rows), _import_run(small)
    ratio = big["optin_seconds"] / big["copy_seconds"]
    growth = big["max_rss_mb"] / little["max_rss_mb"]
    say(f"imports: optin {big['optin_seconds']:.1f} s, COPY {big['copy_seconds']:.2f} s, "
        f"ratio {ratio:.1f} (PostgreSQL alone loading the import's rows: "
        f"{big['floor_seconds']:.1f} s, {big['floor_ratio']:.1f}×); "
        f"peak RSS {little['max_rss_mb']:.0f} -> {big['max_rss_mb']:.0f} MB")
    return [
        Row("imports", f"import {rows:,} Mailchimp rows (s)", round(big["optin_seconds"], 1),
            round(big["copy_seconds"], 2), "COPY of the same rows into a plain table", "≤ 10×",
            ratio <= 10, round(ratio, 1), big),
        Row("imports", f"peak RSS importing {rows:,} rows (MB)", round(big["max_rss_mb"], 1),
            round(little["max_rss_mb"], 1), f"importing {small:,} rows", "≤ 1.2×",
            growth <= 1.2, round(growth, 2), little),
    ]


# --- the audit export of proofs -----------------------------------------------------------


def proof_export(size: Size) -> list[Row]:
    """``optin proof --all`` of a list (``bench/proof_export.py``, its own process) against the
    same export without the PDF layout, and what 10,000 proofs take."""
    count = size.pick(500, 20)
    proc = subprocess.run([sys.executable, "bench/proof_export.py", "--count", str(count)],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    (LOGS / "proof-export.log").write_text(proc.stdout + proc.stderr)
    got = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    per, base = got["pdf_wall_s"] / got["count"], got["baseline_wall_s"] / got["count"]
    say(f"proof export: {per * 1000:.0f} ms a proof against {base * 1000:.0f} ms without PDF; "
        f"10,000 in {got['per_10000_min_at_rate']:.0f} min at this rate, "
        f"{got['per_10000_min_idle']:.0f} min on an idle machine")
    return [
        Row("proof export", f"audit export of {count:,} proofs, s per proof (PDF + JSON)",
            round(per, 3), round(base, 3), "the same export without the PDF layout",
            "10,000 proofs ≤ 20 min", got["per_10000_min_at_rate"] <= 20, round(per / base, 1),
            got),
    ]


SCENARIOS: dict[str, Callable[[Size], list[Row]]] = {
    "signups": signups,
    "confirmations": confirmations,
    "mails": mails,
    "backfill": backfill,
    "retention": retention,
    "memory": memory,
    "timing": timing,
    "mail_latency": mail_latency,
    "imports": imports,
    "proof_export": proof_export,
}
