"""Text shared by several commands: a render status, an asset, a download."""

from __future__ import annotations

from pathlib import Path

import anyio

from .. import Character, RenderStatus, Scene, ViggleClient
from ._common import Ctx
from ._progress import EventView

__all__ = ["asset_text", "download", "status_text"]


def status_text(s: RenderStatus) -> str:
    parts = [f"job {s.job_id}: {s.status}"]
    if s.progress_pct is not None and not s.is_terminal:
        parts.append(f"{s.progress_pct:.0f}%")
    if s.checkpoint:
        parts.append(f"({s.checkpoint})")
    text = " ".join(parts)
    if s.error_code or s.error_message or s.error:
        text += f"\n  error: {s.error_message or s.error or ''} [{s.error_code or '-'}]".rstrip()
    if s.cdn_url:
        text += f"\n  cdn_url: {s.cdn_url}"
    if s.mask_cdn_url:
        text += f"\n  mask_cdn_url: {s.mask_cdn_url}"
    return text


def asset_text(kind: str, a: Character | Scene) -> str:
    text = f"{kind} {a.id}: {a.status}"
    if a.name:
        text += f"  name={a.name!r}"
    if isinstance(a, Scene) and a.segments:
        text += "  segments=" + ",".join(s.uuid for s in a.segments)
    if a.error_message or a.error:
        text += f"  error={a.error_message or a.error}"
    return text


async def download(ctx: Ctx, client: ViggleClient, view: EventView, url: str, dest: Path,
                   label: str) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; prints the size (bytes)."""
    await anyio.Path(dest.parent).mkdir(parents=True, exist_ok=True)
    with view:
        path = await client.download(
            url, dest, on_progress=lambda done, total: view.download_progress(label, done, total))
    size = (await anyio.Path(path).stat()).st_size
    ctx.out.emit({"event": "downloaded", "key": label, "path": path, "bytes": size},
                 f"downloaded {size:,} bytes to {path}")
    return path
