"""An SMTP sink in its own process: accepts every mail, counts them, prints the count at exit.

    python -m bench.smtp_sink PORT [DELAY]

``DELAY`` (seconds, default 0): each mail's answer waits that long, as a remote relay's does.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading

from aiosmtpd.controller import Controller


class Counter:
    def __init__(self, delay: float = 0.0) -> None:
        self.count = 0
        self.bytes = 0
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        if self.delay:
            await asyncio.sleep(self.delay)
        self.count += 1
        self.bytes += len(envelope.content or b"")
        return "250 OK"


def main() -> None:
    port = int(sys.argv[1])
    counter = Counter(float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
    controller = Controller(counter, hostname="127.0.0.1", port=port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    print(f"SINK {counter.count} {counter.bytes}", flush=True)


if __name__ == "__main__":
    main()
