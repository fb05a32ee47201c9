"""The README stays true: its walk-through runs as written, its list of skips matches the tests.

The walk-through test starts a real ``optin serve`` (this virtualenv's ``optin``) in a
fresh folder on a free port, runs each code block marked ``<!-- walk-through -->`` with
bash in that folder, in order, and checks every fragment the block promises in a
``# → `…` `` comment (case-insensitive; ``…`` stands for any non-blank text). The only
change made to the blocks is the port: ``localhost:8000`` becomes the server's.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
OPTIN = Path(sys.executable).parent / "optin"
BLOCK = re.compile(r"<!-- walk-through -->\s*```sh\n(.*?)```", re.DOTALL)
PROMISE = re.compile(r"^# → (.*)$", re.MULTILINE)
FRAGMENT = re.compile(r"`([^`]+)`")
README_PORT = "localhost:8000"
START_TIMEOUT = 30.0
SETTLE_TIMEOUT = 10.0
BLOCK_TIMEOUT = 20.0


@dataclass(frozen=True)
class Block:
    code: str

    @property
    def promises(self) -> list[str]:
        """The backquoted fragments of its ``# → …`` lines."""
        return [f for line in PROMISE.findall(self.code) for f in FRAGMENT.findall(line)]


def walk_through() -> list[Block]:
    return [Block(code) for code in BLOCK.findall(README)]


def promised(fragment: str, port: int) -> re.Pattern[str]:
    parts = [re.escape(p.replace(README_PORT, f"localhost:{port}")) for p in fragment.split("…")]
    return re.compile(r"\S+".join(parts), re.IGNORECASE)


def test_the_readme_has_a_walk_through_with_promises():
    blocks = walk_through()
    assert len(blocks) >= 5
    assert all(block.promises for block in blocks), "every walk-through block promises an output"
    assert any("optin mail last" in block.code and "--links" in block.code for block in blocks)
    assert any("Accept: text/html" in block.code for block in blocks)


# --- the walk-through against a real server -------------------------------------------


@dataclass
class Server:
    folder: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def pending(self) -> int:
        """Outbox rows still to deliver (the server's own SQLite database, read-only)."""
        database = self.folder / "instance" / "optin.db"
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]

    def settle(self) -> None:
        """Wait until the in-process worker has delivered what the last block queued."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.1)

    def run(self, block: Block) -> str:
        code = block.code.replace(README_PORT, f"localhost:{self.port}")
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=self.folder,
                              env=self.env, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"README block failed ({done.returncode}):\n{code}\n{output}"
        return output


def _environment(folder: Path) -> dict[str, str]:
    """This machine's environment without any OPTIN_* setting, as on a newcomer's machine,
    with this virtualenv first on PATH and the instance folder where the README has it."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPTIN_", "FLASK_", "PROMETHEUS_"))}
    env["PATH"] = f"{OPTIN.parent}{os.pathsep}{env.get('PATH', '')}"
    env["OPTIN_INSTANCE_PATH"] = str(folder / "instance")
    return env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    if shutil.which("curl") is None:
        pytest.skip("needs curl, which the walk-through uses")
    env, port, log = _environment(tmp_path), free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(OPTIN), "serve", "--port", str(port)], cwd=tmp_path,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Server(tmp_path, port, env, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"optin serve exited:\n{log.read_text()}"
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"optin serve did not start:\n{log.read_text()}"
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_the_walk_through_works_as_written(server: Server):
    for block in walk_through():
        output = server.run(block)
        for fragment in block.promises:
            assert promised(fragment, server.port).search(output), (
                f"README promises {fragment!r}, but\n{block.code}\nprinted\n{output}")
        server.settle()
    log = server.log.read_text()
    assert f"Running on http://127.0.0.1:{server.port}" in log  # this machine: not pseudonymized
    assert "\x1b[" not in log  # a file is not a terminal: no colour codes


# --- the list of skips ---------------------------------------------------------------------

SKIP_MARK = re.compile(r"pytest\.(?:mark\.skipif|mark\.skip|skip)\(")
SKIPS = re.search(r"<!-- skips:start -->(.*?)<!-- skips:end -->", README, re.DOTALL)


def _files_in(text: str) -> set[str]:
    return set(re.findall(r"`(tests/[\w/]+\.py)`", text))


def _bullet(starting: str) -> str:
    assert SKIPS is not None
    match = re.search(rf"^- {starting}.*?(?=^- |\Z)", SKIPS.group(1), re.DOTALL | re.MULTILINE)
    assert match is not None, f"the README's list of skips has no bullet {starting!r}"
    return match.group()


def _sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
            for p in (ROOT / "tests").rglob("*.py")}


def test_the_readme_names_every_test_file_that_can_skip():
    assert SKIPS is not None
    skipping = {path for path, source in _sources().items() if SKIP_MARK.search(source)}
    assert _files_in(SKIPS.group(1)) == skipping


def test_the_readme_says_which_tests_skip_on_which_database():
    sources = _sources()
    without_postgres = {p for p, s in sources.items() if re.search(r"skipif\(not PG_URL", s)}
    on_postgres = {p for p, s in sources.items() if re.search(r"skipif\((?:bool\()?PG_URL", s)}
    assert _files_in(_bullet("on SQLite")) == without_postgres
    assert _files_in(_bullet("on PostgreSQL")) == on_postgres


#: Command groups the extensions bring (Flask-Limiter's, the OpenAPI document's); of
#: Flask-Migrate's ``db`` the README names the one command an operator runs.
FOREIGN_COMMANDS = {"limiter", "openapi"}


def test_the_command_line_table_names_every_command(app):
    """A newcomer finds every ``optin`` command in the README's "Command line" table (it
    lacked ``proof``, ``retention``, ``ac`` and ``lists update``)."""
    table = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`optin ([a-z-]+(?: [a-z][a-z-]*)?)", table))
    expected = set()
    for name, command in app.cli.commands.items():
        if name in FOREIGN_COMMANDS:
            continue
        subcommands = getattr(command, "commands", None)
        if name == "db":
            expected.add("db upgrade")
        elif subcommands:
            expected |= {f"{name} {sub}" for sub in subcommands}
        else:
            expected.add(name)
    assert "proof" in expected and not expected - named, sorted(expected - named)
