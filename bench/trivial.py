"""A trivial HTTP endpoint (fixed answer, keep-alive) to show what wrk can generate here.

    python -m bench.trivial PORT
    python -m bench.trivial fd://FD     (a socket listening already, ``stack.listening_socket``)

asyncio with no framework: about the least a Python server can do per request,
so wrk's rate against it is a floor for the generator's own capacity.
"""

from __future__ import annotations

import asyncio
import socket
import sys

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Trivial(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)  # GETs carry no body
            self.transport.write(ANSWER)  # type: ignore[attr-defined]


async def main(where: str) -> None:
    loop = asyncio.get_running_loop()
    if where.startswith("fd://"):
        server = await loop.create_server(
            Trivial, sock=socket.socket(fileno=int(where.removeprefix("fd://"))))
    else:
        server = await loop.create_server(Trivial, "127.0.0.1", int(where))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
