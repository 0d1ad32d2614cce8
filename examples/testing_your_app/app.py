"""Your app: turn a selfie and a dance video into an avatar clip.

It takes the ViggleClient as a parameter, so tests can hand it one pointed at the fake
server (see test_app.py).
"""

from __future__ import annotations

from pathlib import Path

from viggle_async import RenderFailedError, ViggleClient


class ClipFailed(Exception):
    """The clip could not be made; the message is fit for your user."""


async def make_avatar_clip(client: ViggleClient, selfie: Path | bytes, dance: Path,
                           dest: Path, *, poll_interval: float = 3.0) -> Path:
    job = await client.renders.create(ref_image=selfie, driving_video=dance)
    try:
        final = await client.renders.wait(job.job_id, poll_interval=poll_interval)
    except RenderFailedError as exc:
        raise ClipFailed(f"Sorry, the render failed ({exc.status.error_message}). "
                         "You were not charged.") from exc
    assert final.cdn_url is not None  # a complete status always has it
    return await client.download(final.cdn_url, dest)
