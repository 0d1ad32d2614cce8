"""Shared by the reliability tests (imported by name: ``from relhelp import Media``); not in
``conftest.py``, so test folders collected together never import each other's conftest."""

from __future__ import annotations

from pathlib import Path

import attrs


@attrs.frozen
class Media:
    png: Path
    mp4: Path  # 2 s, 64x64: 2 credits standard, 4 fast (docs/api/credits.md#costs)
    tmp: Path
