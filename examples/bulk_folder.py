"""Bulk-render every video in a folder with one character image, through the Supervisor.

Runs against the embedded fake server by default (sample media is generated), so it
needs no API key:

    python examples/bulk_folder.py                      # 12 sample clips, fake server
    python examples/bulk_folder.py --real IMAGE FOLDER  # the real API ($VIGGLE_API_KEY)

Rerun with the same --journal and finished clips are skipped, known jobs resumed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from viggle_async import (
    Event,
    Failed,
    PollPolicy,
    SQLiteJournal,
    Submitted,
    Supervisor,
    ViggleClient,
)
from viggle_async.testing import FakeViggle
from viggle_async.testing._samples import make_png, write_mp4


@contextlib.asynccontextmanager
async def api(real: bool) -> AsyncIterator[ViggleClient]:
    if real:
        async with ViggleClient() as client:
            yield client
        return
    async with FakeViggle(time_scale=50.0) as fake, ViggleClient(
        fake.api_key, base_url=fake.base_url
    ) as client:
        yield client


async def show(events: AsyncIterator[Event]) -> None:
    async for event in events:
        if isinstance(event, (Submitted, Failed)):
            print(event)


async def render(real: bool, image: Path | bytes, videos: list[Path], out: Path,
                 journal_path: Path) -> None:
    fast_polls = None if real else PollPolicy(first_delay=0.1, min_interval=0.05,
                                              max_interval=0.5)
    async with api(real) as client, await SQLiteJournal.open(journal_path) as journal:
        # The task group encloses the supervisor: the event stream ends when its block closes.
        async with anyio.create_task_group() as tg, Supervisor(
                client, max_uploads=4, journal=journal, poll_policy=fast_polls,
                asset_poll_interval=5.0 if real else 0.1) as sup:
            tg.start_soon(show, sup.events())
            handles = [sup.render(key=video.stem, ref_image=image, driving_video=video,
                                  output=out / f"{video.stem}-render.mp4")
                       for video in videos]
        outcomes = [await h for h in handles]
    states = Counter(o.state for o in outcomes)
    credits = sum(o.credits or 0 for o in outcomes if o.state == "complete")
    print(f"done: {dict(states)}; credits: {credits}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true")
    parser.add_argument("image", nargs="?")
    parser.add_argument("folder", nargs="?")
    parser.add_argument("--out", default="viggle-demo/bulk")
    parser.add_argument("--journal", default=None, help="journal file (default: in --out)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.folder:
        videos = sorted(p for p in Path(args.folder).iterdir() if p.suffix.lower()
                        in (".mp4", ".mov"))
        image: Path | bytes = Path(args.image)
    else:
        videos = [out / f"sample-{i:02}.mp4" for i in range(12)]
        for i, path in enumerate(videos):
            write_mp4(path, 2.0 + i % 4, size=32 * 1024, sparse=False)
        image = make_png(64, 64)
    asyncio.run(render(args.real, image, videos, out,
                       Path(args.journal) if args.journal else out / "run.journal"))


if __name__ == "__main__":
    main()
