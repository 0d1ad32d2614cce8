"""Render one clip end to end: upload an image and a driving video, wait, download.

Runs against the embedded fake server by default, so it needs no API key:

    python examples/render_one.py                 # fake server, output in ./viggle-demo/
    python examples/render_one.py --real IMG VID  # the real API, key from VIGGLE_API_KEY
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from viggle_async import RenderStatus, ViggleClient
from viggle_async.testing import FakeViggle
from viggle_async.testing._samples import make_png, write_mp4


@contextlib.asynccontextmanager
async def api(real: bool) -> AsyncIterator[ViggleClient]:
    if real:
        async with ViggleClient() as client:  # VIGGLE_API_KEY, VIGGLE_BASE_URL
            yield client
        return
    # 20 simulated seconds pass per real second, so the render ends in about a second.
    async with FakeViggle(time_scale=20.0) as fake, ViggleClient(
        fake.api_key, base_url=fake.base_url
    ) as client:
        yield client


async def render(real: bool, image: Path | bytes, video: Path, out: Path) -> None:
    async with api(real) as client:
        job = await client.renders.create(
            ref_image=image,
            driving_video=video,
            on_upload=lambda sent, total: print(f"\ruploaded {sent}/{total} bytes", end=""),
        )
        print(f"\njob {job.job_id} {job.status}")

        def show(status: RenderStatus) -> None:
            print(f"  {status.status:<10} {status.checkpoint or '':<12} "
                  f"{status.progress_pct or 0:5.1f}%")

        final = await client.renders.wait(job.job_id, poll_interval=3.0 if real else 0.2,
                                          on_progress=show)
        assert final.cdn_url is not None  # a complete status always has it
        dest = await client.download(final.cdn_url, out / f"{job.job_id}.mp4")
        print(f"saved {dest} ({dest.stat().st_size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="use the real API")
    parser.add_argument("image", nargs="?", help="character image (PNG/JPG)")
    parser.add_argument("video", nargs="?", help="driving video (MP4/MOV)")
    parser.add_argument("--out", default="viggle-demo", help="output folder")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image: Path | bytes = Path(args.image) if args.image else make_png(64, 64)
    video = Path(args.video) if args.video else out / "sample-dance.mp4"
    if not args.video:
        write_mp4(video, 4.0, width=320, height=240, sparse=False, size=64 * 1024)
    asyncio.run(render(args.real, image, video, out))


if __name__ == "__main__":
    main()
