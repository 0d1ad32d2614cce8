"""Template segments kept on disk, so a later process can show them.

Get Scene does not return a template's segments (docs/api/assets.md#get-scene): only the import
answer lists them (docs/api/assets.md#import-template), and a multi-person render needs their uuids
for
``character_mapping``. This cache keeps them per user, one small JSON file per scene,
under ``$XDG_CACHE_HOME/viggle-async/segments/<account>/<scene_id>.json`` (``~/.cache``
when XDG_CACHE_HOME is unset). ``<account>`` is a fingerprint of the API key (a salted
SHA-256 prefix): never the key, and one account's scenes are never shown to another.
``VIGGLE_ASYNC_NO_CACHE=1`` turns it off (``SegmentsCache.from_env`` returns None).

Pure file I/O through anyio's worker threads; nothing here talks to the API. A cache that
cannot be read or written is ignored (it only ever adds information).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from ._models import Segment

__all__ = ["NO_CACHE_ENV", "SegmentsCache", "key_fingerprint"]

#: Set to a non-empty value other than 0 to turn the cache off.
NO_CACHE_ENV = "VIGGLE_ASYNC_NO_CACHE"
_FORMAT = 1
# Scene ids are the API's; a file name must not walk out of the folder.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def key_fingerprint(api_key: str) -> str:
    """16 hex digits identifying an account's key in file names (not reversible)."""
    return hashlib.sha256(b"viggle-async segments cache\0" + api_key.encode()).hexdigest()[:16]


class SegmentsCache:
    """One account's cached template segments under ``root`` (see the module docstring).

    ``save(scene_id, segments)`` after an import; ``load(scene_id)`` gives the segments
    (a tuple, possibly empty) or None when nothing is cached or the file is unreadable.
    Neither raises for file-system trouble.
    """

    def __init__(self, root: Path, api_key: str):
        self._dir = Path(root) / key_fingerprint(api_key)

    def __repr__(self) -> str:  # the folder holds a fingerprint, never the key
        return f"SegmentsCache({str(self._dir)!r})"

    @classmethod
    def from_env(cls, api_key: str | None,
                 environ: Mapping[str, str] | None = None) -> SegmentsCache | None:
        """The default cache for ``api_key``; None when it is turned off or there is no
        key (segments are per account)."""
        env = os.environ if environ is None else environ
        if not api_key or env.get(NO_CACHE_ENV, "") not in ("", "0"):
            return None
        base = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
        return cls(Path(base) / "viggle-async" / "segments", api_key)

    def _path(self, scene_id: str) -> Path | None:
        return self._dir / f"{scene_id}.json" if _SAFE_ID.match(scene_id) else None

    async def save(self, scene_id: str, segments: Sequence[Segment]) -> bool:
        """Keep ``segments`` for ``scene_id``; True when written."""
        path = self._path(scene_id)
        if path is None:
            return False
        data = {"format": _FORMAT, "scene_id": scene_id,
                "segments": [{"uuid": s.uuid, "type": s.type} for s in segments]}
        try:
            await anyio.to_thread.run_sync(_write_atomic, path, json.dumps(data))
        except OSError:
            return False
        return True

    async def load(self, scene_id: str) -> tuple[Segment, ...] | None:
        path = self._path(scene_id)
        if path is None:
            return None
        try:
            text = await anyio.Path(path).read_text(encoding="utf-8")
            data = json.loads(text)
            if data.get("format") != _FORMAT or data.get("scene_id") != scene_id:
                return None
            return tuple(Segment(str(s["uuid"]), s.get("type")) for s in data["segments"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    async def forget(self, scene_id: str) -> None:
        """Drop what is cached for ``scene_id`` (e.g. after deleting the scene)."""
        path = self._path(scene_id)
        if path is not None:
            with contextlib.suppress(OSError):
                await anyio.Path(path).unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    # Private to the user (0700 folder, 0600 file), and atomic: a reader never sees half.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
