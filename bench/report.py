"""The results: one table on stdout, ``bench/results.json`` and the chart ``bench/results.png``."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from .scenarios import Row

HERE = Path(__file__).resolve().parent


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{int(value):,}"


def table(rows: list[Row]) -> str:
    """The results as a Markdown table (it reads fine in a terminal too)."""
    lines = ["| scenario | figure | optin | baseline (same run) | ratio | target | result |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.scenario} | {r.figure} | {_fmt(r.value)} | {_fmt(r.baseline)} "
                     f"({r.baseline_label}) | {'—' if r.ratio is None else f'{r.ratio:.2f}'} | "
                     f"{r.target} | "
                     f"{'pass' if r.passed else 'FAIL'} |")
    return "\n".join(lines)


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_json(rows: list[Row], path: Path, *, quick: bool, load_before: list[str]) -> None:
    doc = {"quick": quick, "machine": {**machine(), "loadavg_before": load_before},
           "rows": [r.as_dict() for r in rows]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def load_rows(path: Path) -> list[Row]:
    """The rows of a results.json (to redraw the chart or the table)."""
    return [Row(**row) for row in json.loads(path.read_text())["rows"]]


def chart(rows: list[Row], path: Path) -> None:
    """One bar per row: optin's figure as a multiple of its baseline, with the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.ratio is not None]
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(shown) + 1.6))
    labels = [f"{r.scenario}: {r.figure}" for r in shown]
    colors = ["#15803d" if r.passed else "#b91c1c" for r in shown]
    y = range(len(shown))
    ax.barh(list(y), [r.ratio for r in shown], color=colors)
    for i, r in enumerate(shown):
        limit = _target_value(r.target)
        if limit is not None:
            ax.plot([limit, limit], [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax.text(r.ratio, i, f" {r.ratio:.2f}× ({r.target})", va="center", fontsize=8)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("optin ÷ baseline measured in the same run (black mark: target)")
    ax.set_title("optin against its stack's limits (green: target met)", fontsize=10)
    ax.set_xlim(0, max([2.6] + [r.ratio * 1.35 for r in shown]))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _target_value(target: str) -> float | None:
    for token in target.replace("×", " ").split():
        try:
            return float(token)
        except ValueError:
            continue
    if "+ 1 %" in target:
        return 1.01
    return None
