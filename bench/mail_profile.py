"""CPU and SQL statements per confirmation mail, measured in process (issue 14's profile).

    python bench/mail_profile.py [--mails 400] [--profile FILE]

One delivery thread (``Worker(threads=1).run_once`` until the queue is empty) sends
``--mails`` queued confirmation mails on PostgreSQL into ``bench.smtp_sink`` in its own
process; prints the worker's CPU time (``time.process_time``) and SQL statements per mail,
and with ``--profile`` writes a cProfile of the run. Run it with ``PYTHONPATH`` set to
another checkout to profile that code in the same minute (before and after a change).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or
                            Path(__file__).resolve().parent.parent)))

from sqlalchemy import event  # noqa: E402

from bench import data  # noqa: E402
from bench.stack import (  # noqa: E402
    engine,
    free_port,
    fresh_database,
    prepare_service_database,
    service_env,
    wait_for_port,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=400)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--database", default="optin_bench_mailprofile")
    args = parser.parse_args()
    url = fresh_database(args.database)
    prepare_service_database(url)
    eng = engine(url)
    data.subscriptions(eng, args.mails, "pending")
    data.confirm_mails(eng)
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.smtp_sink", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        wait_for_port(port)
        os.environ.update(service_env(url, OPTIN_MAIL_URL=f"smtp://127.0.0.1:{port}"))
        from optin import create_app
        from optin.delivery.worker import Worker
        from optin.extensions import db

        app = create_app()
        worker = Worker(app, threads=1)
        statements = savepoints = 0

        def count(*_: object) -> None:
            nonlocal statements
            statements += 1

        def count_savepoint(*_: object) -> None:  # SAVEPOINT and RELEASE: round trips too
            nonlocal savepoints
            savepoints += 1

        profiler = cProfile.Profile() if args.profile else None
        with app.app_context():
            event.listen(db.engine, "before_cursor_execute", count)
            event.listen(db.engine, "savepoint", count_savepoint)
            event.listen(db.engine, "release_savepoint", count_savepoint)
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            sent = 0
            while handled := worker.run_once():
                sent += handled
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            event.remove(db.engine, "before_cursor_execute", count)
            event.remove(db.engine, "savepoint", count_savepoint)
            event.remove(db.engine, "release_savepoint", count_savepoint)
        worker.close()
    finally:
        sink.terminate()
        sink.wait(10)
    print(json.dumps({"mails": sent, "cpu_ms_per_mail": round(cpu / sent * 1000, 2),
                      "statements_per_mail": round(statements / sent, 2),
                      "savepoint_statements_per_mail": round(savepoints / sent, 2),
                      "mails_per_s_wall": round(sent / wall, 1)}))
    if profiler and args.profile:
        profiler.dump_stats(args.profile)
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
