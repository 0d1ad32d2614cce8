"""Bulk-render every video in a folder with one character image, through the Supervisor.

Runs against the embedded fake server by default (sample media is generated), so it
needs no API key:

    python examples/bulk_folder.py                      # 12 sample clips, fake server
    python examples/bulk_folder.py --real IMAGE FOLDER  # the real API ($VIGGLE_API_KEY)

With --real, rerun with the same --journal (default: run.journal in --out) and finished
clips whose outputs still exist are skipped, and known jobs are resumed instead of paid for
again. The embedded fake server forgets its jobs when this script ends, so a journal must not
outlive it: in fake mode the journal lives in a temporary folder for the run, and the script
shows the resume itself with a second pass on the same server, after deleting one output.
It exits 1 when any clip did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from viggle_async import (
    Event,
    Failed,
    Outcome,
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


async def render_all(client: ViggleClient, real: bool, image: Path | bytes,
                     videos: list[Path], out: Path, journal_path: Path) -> list[Outcome]:
    """One supervised pass over every video; keys are the file names, so a rerun with the
    same journal knows each clip."""
    fast_polls = None if real else PollPolicy(first_delay=0.1, min_interval=0.05,
                                              max_interval=0.5)
    async with await SQLiteJournal.open(journal_path) as journal:
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
    # Credits of the jobs this pass created (a resumed job was paid for when it was created).
    credits = sum(o.credits or 0 for o in outcomes if o.state == "complete" and o.attempts)
    creates = sum(o.attempts for o in outcomes)
    print(f"done: {dict(sorted(states.items()))}; creates sent: {creates}; credits: {credits}")
    for outcome in outcomes:
        if not outcome.ok:
            print(f"{outcome.key}: {outcome.state}: {outcome.error}", file=sys.stderr)
    return outcomes


async def run(args: argparse.Namespace, image: Path | bytes, videos: list[Path],
              out: Path) -> bool:
    async with api(args.real) as client:
        if args.real:
            journal = Path(args.journal) if args.journal else out / "run.journal"
            outcomes = await render_all(client, True, image, videos, out, journal)
            return all(o.ok for o in outcomes)
        with tempfile.TemporaryDirectory(prefix="viggle-example-") as tmp:
            journal = Path(tmp) / "run.journal"
            first = await render_all(client, False, image, videos, out, journal)
            # Resume on the same server and journal: a lost output is fetched again from its
            # known job, nothing is submitted or paid for twice, the rest is skipped.
            lost = out / f"{videos[0].stem}-render.mp4"
            lost.unlink(missing_ok=True)
            print(f"rerun with the same journal, after deleting {lost.name}:")
            second = await render_all(client, False, image, videos, out, journal)
            return all(o.ok for o in first + second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true")
    parser.add_argument("image", nargs="?")
    parser.add_argument("folder", nargs="?")
    parser.add_argument("--out", default="viggle-demo/bulk")
    parser.add_argument("--journal", default=None,
                        help="journal file, with --real (default: run.journal in --out)")
    args = parser.parse_args()
    if args.journal and not args.real:
        parser.error("--journal needs --real: the embedded fake server forgets its jobs when "
                     "the script ends, so its journal lives only as long as the run")
    if args.real and not (args.image and args.folder):
        parser.error("--real needs IMAGE and FOLDER")
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
    if not videos:
        parser.error(f"no .mp4 or .mov files in {args.folder}")
    if not asyncio.run(run(args, image, videos, out)):
        sys.exit(1)


if __name__ == "__main__":
    main()
