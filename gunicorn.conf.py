"""gunicorn settings for optin's web processes: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every value can be overridden with gunicorn's own ``GUNICORN_CMD_ARGS`` or
command-line flags. The outbox worker is a separate process (``optin worker``).
What optin's own variables mean (the log format, the metrics folder) is read
from the same settings the app reads, so both agree on every default.
"""

import gc
import json
import multiprocessing
import os
import re
import sys
from datetime import UTC, datetime

from gunicorn.glogging import Logger

from optin import load_settings
from optin.config import ConfigError
from optin.ops import metrics
from optin.ops.logs import ScrubFilter, scrubber

try:
    settings = load_settings()
except ConfigError as exc:
    sys.exit(f"optin: configuration error: {exc}")

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# Requests are short and mostly wait on the database: a few processes per core.
workers = int(os.environ.get("GUNICORN_WORKERS", min(2 * multiprocessing.cpu_count() + 1, 12)))
worker_class = "sync"
timeout = 30  # a request that takes this long is stuck: restart the worker
graceful_timeout = 30
keepalive = 5
max_requests = 10_000  # recycle workers now and then, bounding any slow growth
max_requests_jitter = 1_000
# No query strings in the access log (operator calls carry addresses there), no client IP,
# no user agent, no link token: the request id (optin's X-Request-ID answer header) ties a
# line to the app's own log lines instead. One JSON object a line like the app's, unless
# OPTIN_LOG_FORMAT is text (the default in development), which uses this format:
accesslog = "-"
access_log_format = ('request_id=%({x-request-id}o)s method=%(m)s path="%(U)s" status=%(s)s '
                     'bytes=%(B)s duration_ms=%(M)s')
errorlog = "-"
ACCESS_LOG_JSON = settings.log_format == "json"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The app's own rule for log text: link tokens and secrets blanked, addresses and IPs
# (in a path, or in gunicorn's "Invalid request from ip=…") replaced by their pseudonyms.
SCRUB = scrubber(settings)
# gunicorn 25+ opens a control socket at one default path per user, shared by every
# gunicorn on the host (two optin instances would fight over it); optin needs none.
control_socket_disable = True


class AccessLogger(Logger):
    """gunicorn's logger: the access log's path scrubbed like the app's log lines (a
    logged /confirm/<token> could confirm someone; /v1/lists/anna@example.org names her),
    control characters escaped (a %0A in a path must not forge a line), JSON lines; the
    error log scrubbed too."""

    def setup(self, cfg):  # noqa: ANN001, ANN201
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for out in log.handlers:
                out.addFilter(ScrubFilter(SCRUB))

    def atoms(self, resp, req, environ, request_time):  # noqa: ANN001, ANN201
        atoms = super().atoms(resp, req, environ, request_time)
        path = SCRUB(atoms["U"] or "")
        atoms["U"] = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", path)
        return atoms

    def access(self, resp, req, environ, request_time):  # noqa: ANN001, ANN201
        if not ACCESS_LOG_JSON:
            return super().access(resp, req, environ, request_time)
        if not self.access_log_enabled:
            return None
        atoms = self.atoms(resp, req, environ, request_time)
        line = {
            "time": datetime.now(UTC).isoformat(), "level": "INFO", "logger": "gunicorn.access",
            "request_id": atoms.get("{x-request-id}o", "-"), "method": atoms["m"],
            "path": atoms["U"],
            "status": int(atoms["s"]) if str(atoms["s"]).isdigit() else atoms["s"],
            "bytes": atoms["B"], "duration_ms": atoms["M"],
        }
        self.access_log.info("%s", json.dumps(line, ensure_ascii=False))
        return None


logger_class = AccessLogger
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")


def when_ready(server):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    if workers > 1 and settings.metrics_dir is None:
        server.log.warning("OPTIN_METRICS_DIR is unset: each of the %s workers answers /metrics "
                           "with its own counts only (see README, Metrics)", workers)


def post_worker_init(worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """The app is loaded: move what it built (modules, the ORM's mappers, schemas, compiled
    statements; some 170,000 objects) out of the garbage collector's sight. A full
    collection of them took 130-240 ms of a request's time on a loaded 2-core machine,
    and they are never garbage; objects made afterwards are collected as before."""
    gc.freeze()


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """With OPTIN_METRICS_DIR, a dead worker's counts stay summed in /metrics; this only
    drops its live-process gauges (prometheus-client's multi-process mode)."""
    metrics.mark_process_dead(worker.pid, settings.metrics_dir)
