"""An SMTP sink that logs when each mail arrived, can be slow, and can play a relay that is down.

    python -m bench.timed_sink PORT LOGFILE [--delay SECONDS]

Each accepted mail appends ``ARRIVED <unix time> <recipient>`` to LOGFILE. SIGUSR1 takes
the relay down: the SMTP server stops and a plain listener on the same port answers every
connection with ``421`` and closes it, logging ``PROBE <unix time>`` (what a worker's
breaker probe looks like to the relay). SIGUSR2 brings the SMTP server back.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import threading
import time

from aiosmtpd.controller import Controller


class Timed:
    def __init__(self, log, delay: float) -> None:  # noqa: ANN001
        self.log, self.delay = log, delay
        self.lock = threading.Lock()

    def write(self, line: str) -> None:
        with self.lock:
            self.log.write(line + "\n")
            self.log.flush()

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        if self.delay:
            await asyncio.sleep(self.delay)
        self.write(f"ARRIVED {time.time():.6f} {envelope.rcpt_tos[0]}")
        return "250 OK"


def refuse(port: int, sink: Timed, stop: threading.Event) -> None:
    """The relay is down: 421 at the greeting, every connection logged."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        s.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = s.accept()
            except TimeoutError:
                continue
            sink.write(f"PROBE {time.time():.6f}")
            try:
                conn.sendall(b"421 4.3.2 relay down for the benchmark\r\n")
            finally:
                conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    sink = Timed(open(args.log, "a"), args.delay)  # noqa: SIM115
    state: dict[str, object] = {"controller": None, "down": None}

    def up() -> None:
        down = state["down"]
        if isinstance(down, tuple):
            down[0].set()
            down[1].join()
            state["down"] = None
        if state["controller"] is None:
            controller = Controller(sink, hostname="127.0.0.1", port=args.port)
            controller.start()
            state["controller"] = controller
        sink.write(f"UP {time.time():.6f}")

    def go_down() -> None:
        controller = state["controller"]
        if isinstance(controller, Controller):
            controller.stop()
            state["controller"] = None
        if state["down"] is None:
            stop = threading.Event()
            thread = threading.Thread(target=refuse, args=(args.port, sink, stop), daemon=True)
            thread.start()
            state["down"] = (stop, thread)
        sink.write(f"DOWN {time.time():.6f}")

    requests: list[str] = []
    wake = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: (requests.append("down"), wake.set()))
    signal.signal(signal.SIGUSR2, lambda *_: (requests.append("up"), wake.set()))
    signal.signal(signal.SIGTERM, lambda *_: (requests.append("stop"), wake.set()))
    up()
    while True:
        wake.wait()
        wake.clear()
        while requests:
            what = requests.pop(0)
            if what == "stop":
                controller = state["controller"]
                if isinstance(controller, Controller):
                    controller.stop()
                return
            (go_down if what == "down" else up)()


if __name__ == "__main__":
    main()
