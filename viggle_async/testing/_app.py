"""The API application: routes and the middleware that observes and injects faults."""

from __future__ import annotations

import asyncio
import http
import json
import math

from aiohttp import web
from aiohttp.typedefs import Handler

from . import _assets, _render
from ._common import CREATE_RECORD, DroppedConnection
from ._errors import ApiError
from ._store import STORE, Store

__all__ = ["api_app"]

_UNMATCHED = "<unmatched>"


def _route(request: web.Request) -> tuple[str, str]:
    resource = request.match_info.route.resource
    return request.method, resource.canonical if resource is not None else _UNMATCHED


def _selected(routes: frozenset[str] | None, route: tuple[str, str]) -> bool:
    return routes is None or f"{route[0]} {route[1]}" in routes


def _rate_limit(store: Store, request: web.Request, route: tuple[str, str]) -> None:
    """Per-key token bucket (Faults.rate_limit); 429 with Retry-After when empty
    (docs/api/open-questions.md#rate-limits)."""
    limit = store.faults.rate_limit
    if limit is None or not _selected(limit.routes, route):
        return
    header = request.headers.get("Authorization", "")
    key = header.partition(" ")[2].strip()
    now = store.settings.clock()
    tokens, last = store.buckets.get(key, (float(limit.burst), now))
    tokens = min(float(limit.burst), tokens + (now - last) * limit.rate)
    if tokens >= 1.0:
        store.buckets[key] = (tokens - 1.0, now)
        return
    store.buckets[key] = (tokens, now)
    store.obs.rate_limited += 1
    wait = (1.0 - tokens) / limit.rate if limit.rate > 0 else 60.0
    # No rate-limit body is documented: a plain string detail, which clients must accept.
    raise ApiError(
        429,
        "Rate limit exceeded, retry later",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    store = request.app[STORE]
    if request.path.startswith(STATS_PATH):
        return await handler(request)  # the fake's own introspection: not API traffic
    route = _route(request)
    store.obs.enter(route)
    try:
        faults = store.faults
        if faults.latency_s > 0 and _selected(faults.latency_routes, route):
            await asyncio.sleep(faults.latency_s)
        store.settle()
        try:
            _rate_limit(store, request, route)
            if (
                request.method == "GET"
                and faults.get_error_rate > 0
                and store.error_rng.random() < faults.get_error_rate
            ):
                store.obs.injected_errors += 1
                raise ApiError(faults.get_error_status, "Internal server error (injected)")
            if route == _STATUS_ROUTE and faults.status_error_next > 0:
                _status_error(store)
            response = await handler(request)
            if route in CREATE_ROUTES and response.status == 200:
                response = _after_commit(store, request, route, response)
            if faults.answer_delay_s > 0 and _selected(faults.answer_delay_routes, route):
                await asyncio.sleep(faults.answer_delay_s)
            return response
        except ApiError as exc:
            return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
        except DroppedConnection:
            # The transport is already aborted; this response is never written.
            return web.Response(status=499)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # Router errors (unknown path, wrong method) in FastAPI's shape.
            return web.json_response({"detail": exc.reason}, status=exc.status, headers=_allow(exc))
    finally:
        store.obs.leave(route)


_STATUS_ROUTE = ("GET", "/api/render/{job_id}")
CREATE_ROUTES = frozenset(
    {
        ("POST", "/api/render"),
        ("POST", "/api/characters/preprocess"),
        ("POST", "/api/scenes/preprocess"),
        ("POST", "/api/scenes/import"),
    }
)
# Keys of the new id in each create answer (docs/api/renders.md#create-render,
# docs/api/assets.md#create-character, docs/api/assets.md#create-scene,
# docs/api/assets.md#import-template both styles).
_ID_KEYS = ("job_id", "character_id", "scene_id", "id")


def _status_error(store: Store) -> None:
    """Faults.status_error_next: an overloaded status endpoint, optionally with Retry-After."""
    faults = store.faults
    faults.status_error_next -= 1
    store.obs.status_errors += 1
    status = faults.status_error_status
    headers = {"Retry-After": faults.status_retry_after} if faults.status_retry_after else None
    raise ApiError(status, f"{_reason(status)} (injected)", headers=headers)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _after_commit(
    store: Store, request: web.Request, route: tuple[str, str], response: web.StreamResponse
) -> web.StreamResponse:
    """Faults.create_fail_after_commit*: the create is committed and billed, but the client
    gets a gateway's answer instead of its JSON (the ambiguous case, docs/api/open-questions.md)."""
    faults = store.faults
    if not _selected(faults.create_fail_routes, route):
        return response
    if faults.create_fail_after_commit > 0:
        faults.create_fail_after_commit -= 1
    elif not (
        faults.create_fail_after_commit_rate > 0
        and store.commit_rng.random() < faults.create_fail_after_commit_rate
    ):
        return response
    shape, status = faults.create_fail_shape, faults.create_fail_status
    if shape == "html":
        reason = _reason(status)
        page = (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        answer = web.Response(status=status, text=page, content_type="text/html")
    elif shape == "empty":
        answer = web.Response(status=status, body=b"")
    elif shape == "unparsable":
        answer = web.Response(
            status=status,
            body=b'{"detail": {"message": "upstream connect error or disconn',
            content_type="application/json",
        )
    else:  # "no_id"
        assert isinstance(response, web.Response) and response.body is not None
        body = json.loads(bytes(response.body))  # type: ignore[arg-type]
        inner = body.get("data", body) if isinstance(body.get("data"), dict) else body
        for key in _ID_KEYS:
            inner.pop(key, None)
        status = status if 200 <= status < 300 else 200
        answer = web.json_response(body, status=status)
    record = request.get(CREATE_RECORD)
    if record is not None:
        record.answered_status, record.answer_fault = status, shape
    store.obs.failed_after_commit += 1
    return answer


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def api_app(store: Store) -> web.Application:
    app = web.Application(middlewares=[_middleware])
    app[STORE] = store
    r = app.router
    r.add_post("/api/render", _render.create_render)
    r.add_get("/api/render/{job_id}", _render.get_render)
    r.add_delete("/api/render/{job_id}", _render.cancel_render)
    r.add_post("/api/characters/preprocess", _assets.create_character)
    r.add_get("/api/characters", _assets.list_characters)
    r.add_get("/api/characters/{character_id}", _assets.get_character)
    r.add_delete("/api/characters/{character_id}", _assets.delete_character)
    r.add_post("/api/scenes/preprocess", _assets.create_scene)
    r.add_post("/api/scenes/import", _assets.import_scene)
    r.add_get("/api/scenes", _assets.list_scenes)
    r.add_get("/api/scenes/{scene_id}", _assets.get_scene)
    r.add_delete("/api/scenes/{scene_id}", _assets.delete_scene)
    r.add_get("/api/credits", _assets.get_credits)
    r.add_get(STATS_PATH, _stats)
    return app


# Outside /api so it can never be mistaken for a documented endpoint. For a fake server
# run in another process (``python -m viggle_async.testing``): what it saw, as JSON.
STATS_PATH = "/__fake__/stats"


async def _stats(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.settle()
    key = store.settings.default_api_key
    store.account(key)
    data = store.obs.snapshot()
    data["balance"] = store.ledger.balance(key)  # of the default key; keys are not echoed
    return web.json_response(data)
