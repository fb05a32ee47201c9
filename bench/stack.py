"""The processes and databases a scenario needs, started and stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
#: Parallel runs on one machine keep apart: BENCH_DB_SUFFIX names their databases,
#: BENCH_REDIS_URL their Redis database (flushed at the start of a scenario).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")
DB_SUFFIX = os.environ.get("BENCH_DB_SUFFIX", "")


def database_url(name: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def fresh_database(name: str) -> str:
    """Drop and create ``name`` (it must start with optin_bench); return its URL."""
    if not name.startswith("optin_bench"):
        raise ValueError(f"refusing to recreate {name!r}: bench databases are optin_bench_*")
    name += DB_SUFFIX
    args = ["-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER]
    subprocess.run(["dropdb", *args, "--if-exists", "--force", name], check=True)
    subprocess.run(["createdb", *args, name], check=True)
    return database_url(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_socket() -> socket.socket:
    """A socket listening on a free loopback port already, for a server started after it
    (passed on as a file descriptor): with :func:`free_port` the port was free for anyone
    until the server bound it, and on a busy machine (other test suites start servers too)
    another process took it meanwhile: the server did not start, or the bench measured a
    stranger's server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def service_env(db_url: str, **extra: str) -> dict[str, str]:
    """The service's production environment for a bench database (plus ``extra``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIN_", "GUNICORN_"))}
    env.update({
        "OPTIN_ENV": "production",
        "OPTIN_DATABASE_URL": db_url,
        "OPTIN_SECRET_KEY": SECRET_KEY,
        "OPTIN_CONTROLLER_NAME": "Bench GmbH",
        "OPTIN_CONTROLLER_ADDRESS": "Benchstraße 1; 10115 Berlin",
        "OPTIN_BASE_URL": "http://127.0.0.1:8000",
        "OPTIN_INSTANCE_PATH": tempfile.mkdtemp(prefix="optin-bench-"),
        "OPTIN_RATELIMIT_STORAGE_URL": REDIS_URL,
        # The load comes from one IP; the per-IP abuse limits would answer it with 429.
        "OPTIN_RATELIMIT_SIGNUP": "100000000/minute",
        "OPTIN_RATELIMIT_LINKS": "100000000/minute",
        "OPTIN_METRICS_DIR": tempfile.mkdtemp(prefix="optin-bench-metrics-"),
        "OPTIN_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra)
    return env


def prepare_service_database(db_url: str, *, ac_list_id: int | None = 1) -> None:
    """Migrate a fresh database and create the demo list (linked to AC list ``ac_list_id``).

    The limiter's counters start fresh too: the load generator's addresses repeat from
    run to run, and yesterday's counts would cap their mails (OPTIN_MAILS_PER_ADDRESS_PER_DAY).
    """
    redis.Redis.from_url(REDIS_URL).flushdb()
    code = (
        "from flask_migrate import upgrade\n"
        "from optin import create_app\n"
        "from optin.consent import lists\n"
        "from optin.extensions import db\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    upgrade()\n"
        "    ml = lists.ensure_demo_list()\n"
        f"    ml.ac_list_id = {ac_list_id!r}\n"
        "    db.session.commit()\n"
    )
    subprocess.run([sys.executable, "-c", code], env=service_env(db_url), cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def engine(db_url: str) -> sa.Engine:
    return sa.create_engine(db_url, pool_size=2)


class Process:
    """A child process in its own session, stopped by its pid (and its group)."""

    def __init__(self, args: list[str], env: Mapping[str, str] | None = None,
                 log: Path | None = None, pass_fds: tuple[int, ...] = ()) -> None:
        self.log = log
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.popen = subprocess.Popen(args, env=dict(env) if env else None, cwd=ROOT,
                                      stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True, pass_fds=pass_fds)
        if log:
            out.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def gunicorn(app_spec: str, env: Mapping[str, str], *, log: Path,
             extra_args: tuple[str, ...] = ()) -> Iterator[tuple[Process, str]]:
    """``gunicorn -c gunicorn.conf.py APP`` on a free port, listening before gunicorn starts
    (:func:`listening_socket`); yields (process, base URL)."""
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        env = {**env, "GUNICORN_BIND": f"fd://{sock.fileno()}"}
        args = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                "--access-logfile", "/dev/null", *extra_args, app_spec]
        proc = Process(args, env, log=log, pass_fds=(sock.fileno(),))
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        yield proc, url
    finally:
        proc.stop()


def wait_ready(url: str, proc: Process, timeout: float = 120.0) -> None:
    """Every worker answers only once booted; poll until a request gets through."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"gunicorn exited early; see {proc.log}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                pass
            time.sleep(1.0)  # let the other workers finish booting too
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} never became ready")


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (gunicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def ensure_wrk() -> str:
    """The path of ``wrk``, installed from Debian's packages when missing."""
    path = shutil.which("wrk")
    if path:
        return path
    print("wrk not found: apt-get install -y wrk", flush=True)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
    path = shutil.which("wrk")
    if not path:
        raise RuntimeError("wrk could not be installed")
    return path


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
