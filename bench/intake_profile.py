"""CPU and SQL statements per signup in the worker: its intake row and its confirmation mail.

    python bench/intake_profile.py [--signups 400] [--threads 1] [--batch N] [--lanes]
                                   [--delay SECONDS] [--profile FILE]

The sibling of ``bench/mail_profile.py`` for the burst (issue 14): ``--signups`` signup
requests are queued as the web tier queues them (``consent.intake.accept``, one intake row
each, outside the measurement), then the worker's delivery threads (``Worker(threads=…).run_once``
until nothing is left; one by default) runs the state machine for each and sends each confirmation mail
on PostgreSQL into ``bench.smtp_sink`` in this process. Prints the worker's CPU time
(``time.process_time``), SQL statements and Redis commands (the per-address mail cap) per
signup. ``--lanes`` runs the worker's own loop instead (``Worker.run``: each thread claims
and delivers on its own) until every row is done, and ``--delay`` makes the sink answer
each mail that much later (a remote relay: the slow-relay benchmark's 0.05). Run it with
``PYTHONPATH`` set to another checkout to measure that code in the same minute (before and
after a change).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or
                            Path(__file__).resolve().parent.parent)))

from sqlalchemy import create_engine, event, func, select, text  # noqa: E402

from bench.stack import (  # noqa: E402
    free_port,
    fresh_database,
    prepare_service_database,
    service_env,
    wait_for_port,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signups", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1, help="delivery threads (default 1)")
    parser.add_argument("--batch", type=int, help="rows a claim takes (default: the worker's)")
    parser.add_argument("--lanes", action="store_true",
                        help="run the worker's loop (Worker.run) until every row is done")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds the sink takes to answer each mail")
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--database", default="optin_bench_intakeprofile")
    args = parser.parse_args()
    url = fresh_database(args.database)
    prepare_service_database(url)
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.smtp_sink", str(port), str(args.delay)],
                            stdout=subprocess.PIPE, text=True)
    try:
        wait_for_port(port)
        os.environ.update(service_env(url, OPTIN_MAIL_URL=f"smtp://127.0.0.1:{port}"))
        from redis.client import Redis

        from optin import create_app
        from optin.config import current_settings
        from optin.consent import intake
        from optin.consent.subscriptions import Client, SignupRequest
        from optin.delivery.worker import Worker
        from optin.extensions import db
        from optin.models import OutboxItem

        app = create_app()
        with app.app_context():
            settings = current_settings()
            for i in range(args.signups):
                intake.accept(SignupRequest(
                    email=f"burst{i}@example.org", list="newsletter", consent_text_version=1,
                    first_name=f"First{i}", fields={"company": "ACME"},
                    source_url="https://example.com/landing"),
                    Client(ip=f"198.51.100.{i % 250 + 1}", user_agent="Mozilla/5.0 (bench)"),
                    settings)
        worker = Worker(app, threads=args.threads, batch=args.batch)
        statements = savepoints = redis_calls = 0
        real_execute = Redis.execute_command

        def count(*_: object) -> None:
            nonlocal statements
            statements += 1

        def count_savepoint(*_: object) -> None:  # SAVEPOINT and RELEASE: round trips too
            nonlocal savepoints
            savepoints += 1

        def count_redis(self: Redis, *a: object, **kw: object) -> object:
            nonlocal redis_calls
            redis_calls += 1
            return real_execute(self, *a, **kw)

        profiler = cProfile.Profile() if args.profile else None
        with app.app_context():
            event.listen(db.engine, "before_cursor_execute", count)
            event.listen(db.engine, "savepoint", count_savepoint)
            event.listen(db.engine, "release_savepoint", count_savepoint)
            Redis.execute_command = count_redis  # type: ignore[method-assign]
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            handled = 0
            if args.lanes:
                handled = _run_lanes(worker, url)
            else:
                while rows := worker.run_once():
                    handled += rows
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            Redis.execute_command = real_execute  # type: ignore[method-assign]
            event.remove(db.engine, "before_cursor_execute", count)
            event.remove(db.engine, "savepoint", count_savepoint)
            event.remove(db.engine, "release_savepoint", count_savepoint)
            mails = db.session.scalar(select(func.count()).where(
                OutboxItem.kind == "confirm_mail", OutboxItem.status == "done"))
            left = db.session.scalar(select(func.count()).where(OutboxItem.status != "done"))
        worker.close()
    finally:
        sink.terminate()
        sink.wait(10)
    n = args.signups
    print(json.dumps({"signups": n, "rows_handled": handled, "mails_sent": mails,
                      "rows_not_done": left,
                      "cpu_ms_per_signup": round(cpu / n * 1000, 2),
                      "statements_per_signup": round(statements / n, 2),
                      "savepoint_statements_per_signup": round(savepoints / n, 2),
                      "redis_commands_per_signup": round(redis_calls / n, 2),
                      "signups_per_s_wall": round(n / wall, 1)}))
    if profiler and args.profile:
        profiler.dump_stats(args.profile)
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(40)
    return 0


def _run_lanes(worker: Any, url: str) -> int:
    """Run ``worker.run()`` in a thread until no row is left pending; how many rows were done.
    The poll (every 0.1 s) runs on an engine of its own, so its statements are not counted;
    its CPU (a fraction of a millisecond a poll) is."""
    poll = create_engine(url)
    loop = threading.Thread(target=worker.run)
    loop.start()
    try:
        with poll.connect() as conn:
            while conn.scalar(text("SELECT count(*) FROM outbox WHERE status = 'pending'")):
                conn.rollback()
                time.sleep(0.1)
            done = conn.scalar(text("SELECT count(*) FROM outbox WHERE status = 'done'"))
    finally:
        worker.stop()
        loop.join()
        poll.dispose()
    return int(done or 0)


if __name__ == "__main__":
    sys.exit(main())
