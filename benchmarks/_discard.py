"""A discard server: ``python -m benchmarks._discard``, the physical ceiling for B1.

Listens on 127.0.0.1, prints ``port=...``, and for each connection reads into one reused
buffer until the sender shuts its side down, then answers the byte count (8 bytes, big
endian) and closes. What a raw socket sender reaches against it is loopback's
receive-and-discard rate on this machine, in the same run as the uploads: no HTTP, no
multipart parsing, no copy into Python objects.
"""

from __future__ import annotations

import socket
import sys
import threading

from ._harness import ChildServer

__all__ = ["DiscardServer"]

_BUFFER = 1024 * 1024


class DiscardServer(ChildServer):
    """The discard server in its own process; ``with DiscardServer() as d: d.port``."""

    MODULE, LINES = "benchmarks._discard", 1

    def __init__(self) -> None:
        self.port = 0

    def _started(self, info: dict[str, str]) -> None:
        self.port = int(info["port"])


def _serve(conn: socket.socket) -> None:
    buf = bytearray(_BUFFER)
    total = 0
    with conn:
        while n := conn.recv_into(buf):
            total += n
        conn.sendall(total.to_bytes(8, "big"))


def main() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(f"port={listener.getsockname()[1]}", flush=True)
        while True:  # until SIGTERM
            conn, _ = listener.accept()
            threading.Thread(target=_serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
