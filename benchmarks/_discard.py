"""A discard server: ``python -m benchmarks._discard``, the physical ceiling for B1.

Listens on 127.0.0.1, prints ``port=...``, and for each connection reads into one reused
buffer until the sender shuts its side down, then answers the byte count (8 bytes, big
endian) and closes. What a raw socket sender reaches against it is loopback's
receive-and-discard rate on this machine, in the same run as the uploads: no HTTP, no
multipart parsing, no copy into Python objects.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from types import TracebackType

from ._common import ROOT, loopback_env

__all__ = ["DiscardServer"]

_BUFFER = 1024 * 1024


class DiscardServer:
    """The discard server in its own process; ``with DiscardServer() as d: d.port``."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> DiscardServer:
        from ._harness import _read_lines

        proc = subprocess.Popen([sys.executable, "-m", "benchmarks._discard"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                                cwd=ROOT, env=loopback_env())
        self._proc = proc
        try:
            self.port = int(_read_lines(proc, 1, timeout=30.0)["port"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()


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
