"""Issue 11.3: an informational field the API sends in an unreadable form becomes None; only
the fields a decision needs (ids, status, the output URLs of a complete render, a scene's
segments, a balance) may fail a parse. A ``complete`` status without its URL means "poll
again", not "failed"."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from viggle_async import (
    Character,
    Credits,
    RenderJob,
    RenderStatus,
    ResponseFormatError,
    Scene,
    ViggleClient,
)
from viggle_async._converter import DECISION_FIELDS, get_converter
from viggle_async._protocol import Request, Response, parse_model
from viggle_async.testing import ManualClock, MockTransport

NOW = datetime(2024, 1, 1, tzinfo=UTC)
URL = "https://cdn.test/out.mp4"

VALID: dict[type[Any], dict[str, Any]] = {
    RenderStatus: {"job_id": "j", "status": "complete", "cdn_url": URL},
    RenderJob: {"job_id": "j", "status": "queued"},
    Character: {"id": "c", "status": "ready"},
    Scene: {"id": "s", "status": "ready", "segments": [{"uuid": "p1"}]},
    Credits: {"balance": 10},
}


def _informational(cls: type[Any]) -> list[str]:
    keep = DECISION_FIELDS[cls] | ({"cdn_url", "mask_cdn_url"} if cls is RenderStatus else set())
    return [f.name for f in attrs.fields(cls) if f.name not in keep]


def _parse(body: Any, cls: type[Any]) -> Any:
    return parse_model(Response(200, {}, json.dumps(body).encode()), cls, get_converter(),
                       now=NOW)


# Values no informational field of ours can read as its type (every field is a string,
# number, boolean, date-time or nested object): they must all become None.
unreadable = st.sampled_from(["", "yesterday", "2023-13-45T99:00:00Z"]) | st.lists(
    st.integers(), min_size=1, max_size=2) | st.dictionaries(
    st.sampled_from(["x", "percent"]), st.text(max_size=3), min_size=1, max_size=2)


@pytest.mark.parametrize("cls", list(VALID))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_unreadable_informational_fields_become_none(cls: type[Any], data: st.DataObject
                                                     ) -> None:
    names = data.draw(st.lists(st.sampled_from(_informational(cls)), min_size=1, max_size=4,
                               unique=True))
    bad = {name: data.draw(unreadable) for name in names}
    parsed = _parse({**VALID[cls], **bad}, cls)
    for name in names:
        value = getattr(parsed, name)
        # A string field may legitimately read a string; everything else fell back.
        if not (isinstance(bad[name], str) and isinstance(value, str)):
            # (an object with unknown keys is a readable nested object, all of it unknown)
            blank = attrs.has(type(value)) and not any(attrs.astuple(value))
            assert value in (None, ()) or blank, (name, bad[name], value)
    for key, value in VALID[cls].items():  # the decision fields survived intact
        if key != "segments":
            assert getattr(parsed, key) == value


@pytest.mark.parametrize(("field", "value"), [
    ("created_at", ""), ("completed_at", "soon"), ("progress_pct", "60%"),
    ("progress", {"percent": "x"}), ("progress", [1]), ("enqueued_at", True),
    ("error_code", 7), ("checkpoint", {"a": 1}),
])
def test_finished_paid_render_survives_one_malformed_field(field: str, value: Any) -> None:
    parsed = _parse({"job_id": "j", "status": "complete", "cdn_url": URL, field: value},
                    RenderStatus)
    assert parsed.is_complete and parsed.is_terminal and parsed.cdn_url == URL


@pytest.mark.parametrize(("cls", "body"), [
    (RenderStatus, {"job_id": 1, "status": "queued"}),
    (RenderStatus, {"job_id": "j", "status": None}),
    (RenderStatus, {"job_id": "j", "status": "complete", "cdn_url": {"u": 1}}),
    (RenderStatus, {"job_id": "j", "status": "complete", "cdn_url": URL, "mask_cdn_url": 3}),
    (RenderJob, {"status": "queued"}),
    (Character, {"id": ["c"], "status": "ready"}),
    (Scene, {"id": "s", "status": "ready", "segments": "p1"}),
    (Scene, {"id": "s", "status": ["ready"]}),
    (Credits, {"balance": "lots"}),
])
def test_decision_fields_still_fail_the_parse(cls: type[Any], body: dict[str, Any]) -> None:
    with pytest.raises(ResponseFormatError):
        _parse(body, cls)


def test_a_url_that_is_malformed_before_completion_is_ignored() -> None:
    parsed = _parse({"job_id": "j", "status": "processing", "cdn_url": 5}, RenderStatus)
    assert parsed.cdn_url is None and not parsed.is_terminal


def test_unreadable_field_is_logged_once_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="viggle_async")
    for _ in range(3):
        _parse({"id": "c", "status": "ready", "thumbnail_url": 12345}, Character)
    hits = [r for r in caplog.records if "Character.thumbnail_url" in r.getMessage()]
    assert len(hits) <= 1 and all(r.levelno == logging.DEBUG for r in hits)


async def test_wait_polls_again_while_complete_lacks_its_url() -> None:
    answers = [
        {"job_id": "j", "status": "processing", "created_at": ""},
        {"job_id": "j", "status": "complete", "cdn_url": None, "created_at": ""},
        {"job_id": "j", "status": "complete", "cdn_url": URL, "created_at": "",
         "progress": "done"},
    ]

    def handler(request: Request) -> Response:
        return Response(200, {}, json.dumps(answers.pop(0)).encode())

    transport = MockTransport(handler)
    clock = ManualClock()
    seen: list[RenderStatus] = []
    async with ViggleClient("sk", base_url="https://api.test", transport=transport,
                            clock=clock) as client, clock.autojump():
        final = await client.renders.wait("j", on_progress=seen.append)
    assert final.is_complete and final.cdn_url == URL and final.created_at is None
    assert [s.awaiting_output for s in seen] == [False, True, False]
    assert len(transport.calls) == 3 and clock.now() == 6.0
