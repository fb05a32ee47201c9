"""gunicorn settings for optin's web processes: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every value can be overridden with gunicorn's own ``GUNICORN_CMD_ARGS`` or
command-line flags. The outbox worker is a separate process (``optin worker``).
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# Requests are short and mostly wait on the database: a few processes per core.
workers = int(os.environ.get("GUNICORN_WORKERS", min(2 * multiprocessing.cpu_count() + 1, 12)))
worker_class = "sync"
timeout = 30  # a request that takes this long is stuck: restart the worker
graceful_timeout = 30
keepalive = 5
max_requests = 10_000  # recycle workers now and then, bounding any slow growth
max_requests_jitter = 1_000
# No query strings in the access log: operator calls carry addresses there.
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
errorlog = "-"
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
