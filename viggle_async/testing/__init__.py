"""Test helpers: a faithful fake Viggle server with fault injection, and sample media.

``FakeViggle`` never imports the client, so it catches client bugs. See ``FakeSettings`` for
the lifecycle formula and the doc-variant knobs, ``Faults`` for fault injection, and
``Observations`` for what tests can assert on; ``ManualClock`` is exact, instant time for
tests of anything that waits; ``ProxyServer`` is a forward proxy for
testing proxy support. ``python -m viggle_async.testing`` runs the fake.
"""

from ._config import DEFAULT_API_KEY, FakeSettings, Faults, RateLimit, Template
from ._ledger import BalanceEntry
from ._manual_clock import ManualClock
from ._mock_transport import MockCall, MockTransport
from ._observe import CdnRequest, CreateRecord, FilePart, Observations
from ._proxy import ProxyRequest, ProxyServer
from ._samples import make_avi, make_jpeg, make_mp4, make_png, make_webm, make_webp, write_mp4
from ._server import FakeViggle

__all__ = [
    "DEFAULT_API_KEY",
    "BalanceEntry",
    "CdnRequest",
    "CreateRecord",
    "FakeSettings",
    "FakeViggle",
    "Faults",
    "FilePart",
    "ManualClock",
    "MockCall",
    "MockTransport",
    "Observations",
    "ProxyRequest",
    "ProxyServer",
    "RateLimit",
    "Template",
    "make_avi",
    "make_jpeg",
    "make_mp4",
    "make_png",
    "make_webm",
    "make_webp",
    "write_mp4",
]
