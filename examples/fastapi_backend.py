"""A FastAPI backend: POST /renders takes an image and a video, GET /renders/{id} reports.

The ViggleClient is created in the app's lifespan, so every request shares one connection
pool, and it is closed on shutdown. (Needs the ``examples`` extra: fastapi, uvicorn, httpx.)

    python examples/fastapi_backend.py              # serve on 127.0.0.1:8000 ($VIGGLE_API_KEY)
    python examples/fastapi_backend.py --self-test  # run once against the embedded fake server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request, UploadFile

from viggle_async import APIError, InvalidInputError, NotFoundError, ViggleClient


def viggle(request: Request) -> ViggleClient:
    client: ViggleClient = request.app.state.viggle
    return client


Viggle = Annotated[ViggleClient, Depends(viggle)]


async def create_render(client: Viggle, image: UploadFile, video: UploadFile) -> dict[str, str]:
    try:
        # Starlette has already spooled each upload; the client reads the file objects in
        # chunks, so even a large video is never held in memory.
        job = await client.renders.create(ref_image=image.file, driving_video=video.file)
    except InvalidInputError as exc:
        raise HTTPException(400, str(exc)) from None
    except APIError as exc:
        raise HTTPException(502, f"Viggle said {exc.error_code}: {exc.message}") from None
    return {"job_id": job.job_id}


async def get_render(client: Viggle, job_id: str) -> dict[str, Any]:
    try:
        status = await client.renders.get(job_id)
    except NotFoundError:
        raise HTTPException(404, f"no job {job_id}") from None
    return {"job_id": job_id, "status": status.status, "progress_pct": status.progress_pct,
            "video_url": status.cdn_url, "error": status.error_message}


def create_app(api_key: str | None = None, base_url: str | None = None) -> FastAPI:
    """The app; ``api_key``/``base_url`` default to $VIGGLE_API_KEY / $VIGGLE_BASE_URL."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with ViggleClient(api_key, base_url=base_url) as client:
            app.state.viggle = client
            yield

    app = FastAPI(lifespan=lifespan)
    app.post("/renders", status_code=202)(create_render)
    app.get("/renders/{job_id}")(get_render)
    return app


app = create_app()  # uvicorn fastapi_backend:app


async def self_test() -> None:
    """Serve under uvicorn on a free loopback port, against the fake server; render once."""
    from viggle_async.testing import FakeViggle, make_mp4, make_png

    async with FakeViggle(time_scale=50.0) as fake:
        server = uvicorn.Server(uvicorn.Config(create_app(fake.api_key, fake.base_url),
                                               host="127.0.0.1", port=0, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                raise SystemExit("the server did not start")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                files = {"image": ("me.png", make_png(64, 64), "image/png"),
                         "video": ("dance.mp4", make_mp4(3.0, payload=2 * 2**20), "video/mp4")}
                resp = await http.post("/renders", files=files)
                job_id = resp.json()["job_id"]
                print(f"POST /renders -> {resp.status_code} {job_id}")
                while True:
                    body = (await http.get(f"/renders/{job_id}")).json()
                    if body["status"] in ("complete", "failed", "cancelled"):
                        break
                    await asyncio.sleep(0.1)
                print(f"GET /renders/{job_id} -> {body['status']} {body['video_url']}")
                missing = await http.get("/renders/job_nope")
                print(f"GET /renders/job_nope -> {missing.status_code}")
        finally:
            server.should_exit = True
            await serving
    if body["status"] != "complete":
        raise SystemExit(f"render ended {body['status']}: {body['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true", help="run once against the fake")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.self_test:
        asyncio.run(self_test())
    else:
        uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
