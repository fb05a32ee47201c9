"""``python -m bench [--quick] [SCENARIO …]``: run the benchmarks, print the table.

Scenarios: signups, confirmations, mails, backfill, retention, memory, imports, proof_export,
and the delivery engine's burst, burst20k, slowrelay, kill9, pickup, smtpoutage, acoutage (default: all).
Writes ``bench/results.json`` and ``bench/results.png`` (``--out`` to put them elsewhere).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import report
from .delivery import SCENARIOS as DELIVERY
from .scenarios import LOGS, Row, Size, say
from .scenarios import SCENARIOS as SERVICE
from .stack import ensure_wrk

SCENARIOS = {**SERVICE, **DELIVERY}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", choices=[[], *SCENARIOS], metavar="SCENARIO",
                        help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and short runs, to try the harness out")
    parser.add_argument("--out", type=Path, default=report.HERE,
                        help="folder for results.json and results.png (default: bench/)")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    ensure_wrk()
    load_before = report.machine()["loadavg"]
    say(f"load average before: {' '.join(load_before)}; logs in {LOGS}")
    rows: list[Row] = []
    for name in names:
        say(f"== {name}")
        rows.extend(SCENARIOS[name](Size(quick=args.quick)))
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(rows, args.out / "results.json", quick=args.quick, load_before=load_before)
    if not args.no_chart:
        report.chart(rows, args.out / "results.png")
    print()
    print(report.table(rows))
    print(f"\nload average before {' '.join(load_before)}, after "
          f"{' '.join(report.machine()['loadavg'])} (2 cores shared with other jobs)")
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
