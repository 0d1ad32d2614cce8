"""An aiohttp.web backend that passes a user's upload straight on to Viggle.

POST /jobs takes a multipart form (``image``, then ``video``) and answers the job id;
GET /jobs/{id} reports the job's status. The video is streamed from the incoming request
to Viggle as it arrives: no temporary file, never whole in memory. One ViggleClient (one
connection pool) serves the app for its whole lifetime.

    python examples/aiohttp_backend.py              # serve on 127.0.0.1:8080 ($VIGGLE_API_KEY)
    python examples/aiohttp_backend.py --self-test  # run once against the embedded fake server
"""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import BodyPartReader, MultipartReader, web

from viggle_async import APIError, InvalidInputError, NotFoundError, ViggleClient

VIGGLE = web.AppKey("viggle", ViggleClient)
MAX_IMAGE_BYTES = 20 * 2**20
CHUNK = 256 * 1024


def make_app(api_key: str | None = None, base_url: str | None = None) -> web.Application:
    """The app; ``api_key``/``base_url`` default to $VIGGLE_API_KEY / $VIGGLE_BASE_URL."""

    async def viggle_client(app: web.Application) -> AsyncIterator[None]:
        async with ViggleClient(api_key, base_url=base_url) as client:
            app[VIGGLE] = client
            yield

    app = web.Application()
    app.cleanup_ctx.append(viggle_client)
    app.router.add_post("/jobs", create_job)
    app.router.add_get("/jobs/{job_id}", job_status)
    return app


async def next_part(reader: MultipartReader, name: str) -> BodyPartReader:
    part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != name:
        raise web.HTTPBadRequest(text="send a multipart form: 'image' first, then 'video'")
    return part


async def stream(part: BodyPartReader) -> AsyncIterator[bytes]:
    """The part's bytes, passed on as they arrive from the user."""
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def create_job(request: web.Request) -> web.Response:
    reader = await request.multipart()
    # The client checks the first bytes of each file before it sends anything, and a
    # multipart body can only be read in order: so the small image is read first, and the
    # video, last in the form, streams through.
    image = bytearray()
    async for chunk in stream(await next_part(reader, "image")):
        image += chunk
        if len(image) > MAX_IMAGE_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_IMAGE_BYTES,
                                                actual_size=len(image))
    video = await next_part(reader, "video")
    try:
        # An async iterator has no size, so the upload goes out chunked.
        job = await request.app[VIGGLE].renders.create(ref_image=bytes(image),
                                                       driving_video=stream(video))
    except InvalidInputError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except APIError as exc:
        return web.json_response({"error": exc.message, "code": exc.error_code}, status=502)
    return web.json_response({"job_id": job.job_id}, status=202)


async def job_status(request: web.Request) -> web.Response:
    try:
        status = await request.app[VIGGLE].renders.get(request.match_info["job_id"])
    except NotFoundError:
        raise web.HTTPNotFound() from None
    return web.json_response({"job_id": status.job_id, "status": status.status,
                              "progress_pct": status.progress_pct, "video_url": status.cdn_url,
                              "error": status.error_message})


async def self_test() -> None:
    """Serve on a free loopback port against the fake server and make one render."""
    from viggle_async.testing import FakeViggle, make_mp4, make_png

    image, video = make_png(64, 64), make_mp4(3.0, payload=4 * 2**20)
    async with FakeViggle(time_scale=50.0) as fake:
        runner = web.AppRunner(make_app(fake.api_key, fake.base_url))
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            async with aiohttp.ClientSession() as http:
                form = aiohttp.FormData()
                form.add_field("image", image, filename="me.png", content_type="image/png")
                form.add_field("video", io.BytesIO(video), filename="dance.mp4",
                               content_type="video/mp4")
                async with http.post(f"{url}/jobs", data=form) as resp:
                    job_id = (await resp.json())["job_id"]
                    print(f"POST /jobs -> {resp.status} {job_id}")
                while True:
                    async with http.get(f"{url}/jobs/{job_id}") as resp:
                        body = await resp.json()
                    if body["status"] in ("complete", "failed", "cancelled"):
                        break
                    await asyncio.sleep(0.1)
                print(f"GET /jobs/{job_id} -> {body['status']} {body['video_url']}")
        finally:
            await runner.cleanup()
        record = fake.creates[0]  # what the fake server saw of the render create
        print(f"sent: image {len(image)} bytes, video {len(video)} bytes")
        for part in record.files:
            print(f"fake received: {part.name} {part.size} bytes ({part.transfer})")
    if body["status"] != "complete":
        raise SystemExit(f"render ended {body['status']}: {body['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true", help="run once against the fake")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if args.self_test:
        asyncio.run(self_test())
    else:
        web.run_app(make_app(), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
