"""A big upload streams: a fresh client process stays small while sending a sparse video
of a few hundred MiB, framed with Content-Length (conventions: measure peak RSS of a
subprocess; tracemalloc misses C buffers)."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path

from viggle_async.testing import FakeViggle, make_png

SIZE = 256 * 2**20
LIMIT_GROWTH = 48 * 2**20

CHILD = textwrap.dedent("""
    import asyncio, json, sys
    import psutil
    from viggle_async import Limits, ViggleClient
    from viggle_async.testing import make_png, write_mp4

    base_url, key, path, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    write_mp4(path, 20.0, size=size, sparse=True)

    async def main():
        sent = []
        async with ViggleClient(key, base_url=base_url,
                                limits=Limits(max_upload_bytes=size + 1)) as client:
            before = psutil.Process().memory_info().rss
            job = await client.renders.create(
                ref_image=make_png(), driving_video=path,
                on_upload=lambda n, total: sent.append((n, total)))
        # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would include the peak
        # of the (forked) pytest parent; VmHWM belongs to this process's own memory.
        with open("/proc/self/status") as f:
            status = f.read()
        peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
        print(json.dumps({"growth": peak - before, "job": job.job_id,
                          "last": sent[-1], "calls": len(sent)}))

    asyncio.run(main())
""")


async def test_big_upload_streams_with_flat_memory(tmp_path: Path) -> None:
    video = tmp_path / "big.mp4"
    async with FakeViggle(max_upload_bytes=SIZE + 1) as fake:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, fake.base_url, fake.api_key, str(video), str(SIZE),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        result = json.loads(out)
        (record,) = fake.creates
        assert record.status == 200 and record.result_id == result["job"]
        assert record.transfer == "content-length"  # not chunked: the size was known
        video_part = record.files[1]
        assert (video_part.name, video_part.size) == ("driving_video", SIZE)
    total = SIZE + len(make_png())
    assert result["last"] == [total, total]  # progress sums to every byte uploaded
    assert result["calls"] > 100  # reported chunk by chunk, not once at the end
    growth = result["growth"] / 2**20
    print(f"client peak RSS growth for a {SIZE / 2**20:.0f} MiB upload: {growth:.1f} MiB")
    assert result["growth"] < LIMIT_GROWTH, f"peak RSS grew {growth:.1f} MiB"

