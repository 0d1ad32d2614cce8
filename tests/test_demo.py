"""The demo renders every clip, through every kind of render, on the embedded fake server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import av

from viggle_async import Completed, Event, FastFallback, Outcome
from viggle_async.cli._demo import DUO_TEMPLATE, OUTAGE_REFUSALS, DemoSummary, run_demo
from viggle_async.testing import FakeViggle


async def test_demo_renders_every_clip_and_accounts_for_it(tmp_path: Path) -> None:
    seen: list[Event] = []

    async def collect(events: AsyncIterator[Event]) -> None:
        async for event in events:
            seen.append(event)

    async with FakeViggle() as fake:
        summary = await run_demo(tmp_path, on_events=collect, fake=fake)
        renders = [o for o in summary.outcomes if o.kind == "render"]
        by_key = {o.key: o for o in summary.outcomes}

        # Every clip completes, quickly.
        assert len(renders) == 20
        assert summary.done == len(summary.outcomes) and summary.failed == 0
        assert summary.elapsed_s < 30
        assert summary.out_dir == tmp_path

        # Each output holds exactly the bytes the fake CDN serves for that job; the
        # transparent render also has its mask.
        async with aiohttp.ClientSession() as http:
            for outcome in renders:
                assert outcome.job_id is not None
                status = fake.render_status(outcome.job_id)
                urls = [status["cdn_url"]] + ([status["mask_cdn_url"]]
                                              if status.get("mask_cdn_url") else [])
                assert len(outcome.outputs) == len(urls)
                for path, url in zip(outcome.outputs, urls, strict=True):
                    async with http.get(url) as resp:
                        assert path.read_bytes() == await resp.read()
        assert len(by_key["on-demand-6"].outputs) == 2

        # The clips are real, playable H.264 videos, one different file per job (issue 14.18).
        clips = [o.outputs[0] for o in renders]
        assert len({p.read_bytes() for p in clips}) == len(clips)
        for path in clips[:3]:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                assert stream.codec_context.name == "h264"
                assert sum(1 for _ in container.decode(stream)) > 1
        assert fake.cdn_auth_headers == []  # the key never went to the CDN

        # Credits: the balance moved by exactly what the outcomes say was spent.
        assert summary.credits_spent == sum(o.credits or 0 for o in summary.outcomes)
        assert summary.credits_spent > 0

        # The capacity outage was ridden out: backoff, and at least one fallback to standard.
        assert fake.capacity_rejections == OUTAGE_REFUSALS
        assert summary.retries >= 1
        fell_back = [o for o in renders if o.fallback_used]
        assert summary.fallbacks == len(fell_back) >= 1
        for outcome in renders:
            if outcome.key.startswith("fast-"):
                assert outcome.job_id is not None
                assert fake.job(outcome.job_id).fast == (not outcome.fallback_used)

        # Characters are reused on the uploaded scene (character_id + scene_id).
        alice, bob = by_key["alice"].asset_id, by_key["bob"].asset_id
        studio = by_key["studio"].asset_id
        fields = {c.result_id: c.fields for c in fake.creates
                  if c.kind == "render" and c.status == 200}
        pre = [fields[o.job_id] for o in renders if o.key.startswith("preprocessed-")]
        assert len(pre) == 6
        assert {f["character_id"] for f in pre} == {alice, bob}
        assert {f["scene_id"] for f in pre} == {studio}

        # The template renders map each tracked person to a character.
        people = fake.settings.templates[DUO_TEMPLATE].segments
        duo_scene = by_key["duo-template"].asset_id
        for key, cast in (("duo", (alice, bob)), ("duo-swapped", (bob, alice))):
            sent = fields[by_key[key].job_id]
            assert sent["scene_id"] == duo_scene
            assert "character_id" not in sent
            assert json.loads(sent["character_mapping"]) == dict(zip(people, cast, strict=True))

    # The caller's event stream saw everything, to the end.
    completed = {e.key for e in seen if isinstance(e, Completed)}
    assert completed == set(by_key)
    assert sum(isinstance(e, FastFallback) for e in seen) == summary.fallbacks


def test_summary_counts_ok_and_not_ok_outcomes(tmp_path: Path) -> None:
    outcomes = (Outcome("a", "render", "complete"), Outcome("b", "render", "skipped"),
                Outcome("c", "render", "failed"), Outcome("d", "render", "not_submitted"))
    summary = DemoSummary(outcomes, 1.0, 0, 0, 0, tmp_path)
    assert (summary.done, summary.failed) == (2, 2)


def test_clips_and_assets_are_counted_apart(tmp_path: Path) -> None:
    outcomes = (Outcome("a", "render", "complete"), Outcome("b", "render", "failed"),
                Outcome("c", "character", "complete"), Outcome("d", "scene", "complete"))
    summary = DemoSummary(outcomes, 1.0, 0, 0, 0, tmp_path)
    assert (summary.clips, summary.assets, summary.done) == (1, 2, 3)
