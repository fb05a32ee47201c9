"""CPU and statements per request, in process: the hot routes against the one-INSERT baseline.

``python -m bench.inprocess confirm|signup|baseline [N]`` builds the service with the
bench's production settings (PostgreSQL, Redis-backed limits, metrics directory) and
sends N requests through Flask's test client, timing them with ``time.process_time``
(this process's CPU only: the database's and Redis's work is not in it, for the
baseline neither). The baseline is ``bench/baseline_app.py``'s handler, measured the
same way. Statements per request are counted with SQLAlchemy's cursor events in a
separate pass. A load generator's figures (``python -m bench``) shift with the
machine's load; these shift much less, so before/after can be compared in the same
minutes by running this alternately on two checkouts (``PYTHONPATH`` picks the code).

``confirm`` also reports the worker's CPU per applied click when the route queues them
(the request's cost is what the visitor waits for; the worker's is spent after).
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bench import stack

WARM = 200


def _measure(send: Callable[[int], Any], n: int, offset: int = 0) -> float:
    """CPU milliseconds per call of ``send(i)`` for i in offset..offset+n. With
    ``BENCH_PROFILE=PATH`` the calls run under cProfile instead and its table (by own
    time) goes to PATH: the figure is then the profiler's, not the route's."""
    profile = os.environ.get("BENCH_PROFILE") if offset else None
    profiler = cProfile.Profile(time.process_time) if profile else None
    start = time.process_time()
    if profiler:
        profiler.enable()
    for i in range(offset, offset + n):
        send(i)
    if profiler and profile:
        profiler.disable()
        profiler.dump_stats(profile + ".prof")
        with open(profile, "w") as out:
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(45)
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(70)
    return (time.process_time() - start) * 1000 / n


def _count_statements(engine: sa.Engine, send: Callable[[int], Any], ids: range) -> float:
    seen = [0]

    def record(*args: Any) -> None:
        seen[0] += 1

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for i in ids:
            send(i)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return seen[0] / len(ids)


def _service(name: str) -> tuple[Any, str]:
    url = stack.fresh_database(f"optin_bench_inproc_{name}")
    stack.prepare_service_database(url)
    os.environ.update(stack.service_env(url))
    from optin import create_app

    return create_app(), url


def confirm(n: int) -> dict[str, Any]:
    from bench import data

    app, url = _service("confirm")
    eng = stack.engine(url)
    data.subscriptions(eng, n + WARM + 100, "pending")
    tokens = data.confirm_tokens(eng)
    client = app.test_client()

    def send(i: int) -> None:
        answer = client.post(f"/confirm/{tokens[i]}", environ_base={"REMOTE_ADDR": "198.51.100.7"},
                             headers={"User-Agent": "bench"})
        assert answer.status_code == 303, answer.status_code

    _measure(send, WARM)
    cpu = _measure(send, n, WARM)
    with app.app_context():
        from optin.extensions import db

        statements = _count_statements(db.engine, send, range(WARM + n, WARM + n + 100))
    result: dict[str, Any] = {"route": "POST /confirm/<token>", "n": n, "cpu_ms": round(cpu, 3),
                              "statements": statements}
    with eng.connect() as conn:
        queued = conn.scalar(sa.text("SELECT count(*) FROM outbox WHERE kind = 'confirm_intake' "
                                     "AND status = 'pending'"))
    if queued:
        from optin.delivery.worker import Worker

        start = time.process_time()
        Worker(app).drain()
        result["worker_cpu_ms_per_row_and_its_rows"] = round(
            (time.process_time() - start) * 1000 / queued, 3)
    with eng.connect() as conn:
        result["confirmed"] = conn.scalar(sa.text(
            "SELECT count(*) FROM subscription WHERE status = 'confirmed'"))
    return result


def signup(n: int) -> dict[str, Any]:
    app, _ = _service("signup")
    client = app.test_client()

    def send(i: int) -> None:
        answer = client.post("/v1/subscriptions", json={
            "email": f"inproc{i}@example.org", "list": "newsletter", "consent_text_version": 1},
            environ_base={"REMOTE_ADDR": "198.51.100.7"})
        assert answer.status_code == 202, answer.status_code

    _measure(send, WARM)
    cpu = _measure(send, n, WARM)
    with app.app_context():
        from optin.extensions import db

        statements = _count_statements(db.engine, send, range(WARM + n, WARM + n + 100))
    return {"route": "POST /v1/subscriptions", "n": n, "cpu_ms": round(cpu, 3),
            "statements": statements}


def baseline(n: int) -> dict[str, Any]:
    url = stack.fresh_database("optin_bench_inproc_baseline")
    os.environ["BENCH_DATABASE_URL"] = url
    from bench import baseline_app

    with baseline_app.engine.begin() as conn:
        conn.execute(sa.text(baseline_app.SCHEMA))
    client = baseline_app.app.test_client()

    def send(i: int) -> None:
        answer = client.post("/v1/subscriptions",
                             json={"email": f"inproc{i}@example.org", "list": "newsletter"})
        assert answer.status_code == 202

    _measure(send, WARM)
    cpu = _measure(send, n, WARM)
    statements = _count_statements(baseline_app.engine, send, range(WARM + n, WARM + n + 100))
    return {"route": "baseline (one INSERT)", "n": n, "cpu_ms": round(cpu, 3),
            "statements": statements}


def main(argv: list[str]) -> int:
    scenario, n = argv[0], int(argv[1]) if len(argv) > 1 else 1000
    print(json.dumps({"confirm": confirm, "signup": signup, "baseline": baseline}[scenario](n)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
