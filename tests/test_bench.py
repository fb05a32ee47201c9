"""The benchmark harness's pieces work (``python -m bench``): not a timed test.

Runs the quick signups scenario end to end (PostgreSQL, gunicorn, wrk, the
baseline app) into a temporary folder and checks the JSON it writes. Skipped
without wrk or without a PostgreSQL server to create ``optin_bench_*`` in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent



def test_backfill_bound_counts_both_limits() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.scenarios import backfill_bound

    assert backfill_bound(250) == (1, pytest.approx(0.2))
    # 400 imports: 5 a second, and never more than 100 in a minute.
    requests, seconds = backfill_bound(100_000)
    assert requests == 400
    assert seconds == pytest.approx(180 + 99 / 5 + 0.2)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
@pytest.mark.skipif(shutil.which("createdb") is None, reason="needs PostgreSQL's createdb")
def test_quick_signups_run_writes_results(tmp_path: Path) -> None:
    if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"],
                      capture_output=True).returncode != 0:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    # Databases of this run alone: two suites on one machine (each runs this test) dropped
    # each other's optin_bench_signups mid-run (``dropdb --force``), and wrk counted errors.
    suffix = f"_t{uuid.uuid4().hex[:8]}"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "--quick", "--no-chart", "--out", str(tmp_path),
             "signups"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**os.environ, "BENCH_DB_SUFFIX": suffix},
        )
    finally:
        for name in ("optin_bench_signups", "optin_bench_baseline"):
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists",
                            "--force", name + suffix], capture_output=True)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: a target missed, still a run
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {row["figure"]: row for row in results["rows"]}
    assert rows["signups/s"]["value"] > 0 and rows["signups/s"]["baseline"] > 0
    assert rows["signups/s"]["notes"]["wrk_errors"] == 0
    assert rows["signups/s"]["notes"]["signups_queued"] >= rows["signups/s"]["notes"]["requests"]
    assert "| signups | signups/s |" in proc.stdout
