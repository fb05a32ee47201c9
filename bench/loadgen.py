"""``wrk`` with Lua scripts: unique signups, pre-made confirmation tokens, a trivial GET.

wrk is written in C with an event loop per thread, so a two-thread wrk
outruns a Python service by far on the same two cores; :func:`headroom`
measures it against a trivial endpoint in each run to show it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .stack import ensure_wrk

THREADS = 2
CONNECTIONS = 16

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

# Unique addresses: run id (env) + wrk thread number + a counter. Even requests
# send JSON, odd ones a form post, as landing pages do.
SIGNUP = r"""
local counter = 0
local run = os.getenv("BENCH_RUN") or "0"
local mode = os.getenv("BENCH_MODE") or "mixed"
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
local next_id = 0
setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
request = function()
  counter = counter + 1
  local email = string.format("b%s-%d-%d@example.org", run, id, counter)
  if mode == "json" or (mode == "mixed" and counter % 2 == 0) then
    return wrk.format("POST", "/v1/subscriptions",
      {["Content-Type"] = "application/json", ["Accept"] = "application/json"},
      '{"email": "' .. email .. '", "list": "newsletter", "locale": "de", '
      .. '"consent_text_version": 1, "first_name": "Bench", "source_url": "https://example.com/landing"}')
  end
  return wrk.format("POST", "/v1/subscriptions",
    {["Content-Type"] = "application/x-www-form-urlencoded"},
    "email=" .. email .. "&list=newsletter&locale=de&consent_text_version=1&first_name=Bench"
    .. "&source_url=https%3A%2F%2Fexample.com%2Flanding")
end
local seen = 0
if limit > 0 then
  response = function(status, headers, body)
    seen = seen + 1
    if seen >= limit then wrk.thread:stop() end
  end
end
""" + _DONE

# Tokens from a file (one per line); thread i of n takes lines i, i+n, ...
CONFIRM = r"""
local tokens = {}
local pos = 0
local next_id = 0
setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
init = function(args)
  local n, i = tonumber(os.getenv("BENCH_THREADS")), 0
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    if i % n == id then tokens[#tokens + 1] = line end
    i = i + 1
  end
end
request = function()
  pos = pos + 1
  if pos > #tokens then pos = 1 end  -- ran dry: repeats are counted by the harness
  return wrk.format("POST", "/confirm/" .. tokens[pos],
    {["Content-Type"] = "application/x-www-form-urlencoded"}, "")
end
""" + _DONE

TRIVIAL = _DONE


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_seconds: float = 0.0  # wrk's own CPU time (user + system)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_share(self) -> float:
        """Cores wrk kept busy on average: far below 1 means it was waiting for the server."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0


def run(url: str, script: str, *, seconds: float, env: dict[str, str] | None = None,
        connections: int = CONNECTIONS) -> WrkResult:
    """Run wrk for ``seconds`` (or until the script stops it) and parse its summary."""
    wrk = ensure_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(
            [wrk, f"-t{THREADS}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
             "--timeout", "10s", "-s", f.name, url],
            env={**os.environ, "BENCH_THREADS": str(THREADS), **(env or {})},
            capture_output=True, text=True, check=True,
        )
    finally:
        Path(f.name).unlink()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line[len("WRKJSON "):])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(requests=data["requests"], seconds=data["duration_us"] / 1e6,
                     p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, errors=errors,
                     cpu_seconds=cpu)
