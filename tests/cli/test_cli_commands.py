"""The one-shot commands against the fake server: exit codes, human and JSON output."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clihelp import FAST, SECRET, Run, api_requests, size

from viggle_async import ViggleClient
from viggle_async.testing import FakeViggle, Faults


@pytest.fixture
async def api(fake: FakeViggle) -> AsyncIterator[ViggleClient]:
    """A client of the test's own, to set up jobs and assets the CLI then works on."""
    async with ViggleClient(SECRET, base_url=fake.base_url) as client:
        yield client


# --- render ------------------------------------------------------------------------------

async def test_render_on_demand_waits_and_downloads(cli: Run, fake: FakeViggle,
                                                    media: Path) -> None:
    out = media / "out" / "r.mp4"
    result = await cli("render", "--ref-image", str(media / "me.png"), "--driving-video",
                       str(media / "d2.mp4"), "-o", str(out), *FAST)
    assert result.code == 0, result.err
    (job_id,) = [c.result_id for c in fake.creates]
    assert result.out == f"r: complete (job {job_id}) -> {out}\n"
    assert "estimated cost: 2 credits" in result.err
    assert f"r: submitted as job {job_id}" in result.err
    assert "r: complete" not in result.err  # the result is printed once, on stdout
    assert size(out) == 2048
    assert fake.balance() == 10_000 - 2


async def test_render_preprocessed_with_json_lines(cli: Run, fake: FakeViggle, media: Path,
                                                   api: ViggleClient) -> None:
    character = await api.characters.create(name="A", image=media / "me.png")
    scene = await api.scenes.import_template("tmpl-video-wave")
    await api.characters.wait(character.id, poll_interval=0.01)
    await api.scenes.wait(scene.id, poll_interval=0.01)
    result = await cli("render", "--character-id", character.id, "--scene-id", scene.id,
                       "-o", str(media / "p.mp4"), "--json", *FAST)
    assert result.code == 0, result.err
    objs = result.json_lines()
    assert [o["event"] for o in objs][:2] == ["queued", "submitted"]
    summary = objs[-1]
    assert summary["event"] == "summary" and summary["exit_code"] == 0
    assert summary["outcome"]["state"] == "complete"
    assert summary["outcome"]["outputs"] == [str(media / "p.mp4")]
    render = fake.creates[-1]
    assert (render.kind, render.fields["character_id"], render.fields["scene_id"]) == (
        "render", character.id, scene.id)


async def test_render_with_bad_input_exits_2_and_sends_nothing(cli: Run, fake: FakeViggle,
                                                               media: Path) -> None:
    result = await cli("render", "--ref-image", str(media / "me.png"), "--driving-video",
                       str(media / "d2.mp4"), "--bg-color", "0,0,0", "-o", str(media / "x.mp4"))
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        "error: --bg-color: is only valid with --background-mode solid [CS-UORC01-002]. "
        "Fix: set --background-mode solid or drop --bg-color"]
    assert api_requests(fake) == 0


async def test_a_failed_render_exits_1(cli: Run, fake: FakeViggle, media: Path) -> None:
    fake.faults = Faults(render_failure_rate=1.0)
    result = await cli("render", "--ref-image", str(media / "me.png"), "--driving-video",
                       str(media / "d1.mp4"), "-o", str(media / "f.mp4"), *FAST)
    assert result.code == 1
    assert "f: failed (job " in result.err and "CS-UORC01-009" in result.err


# --- jobs ----------------------------------------------------------------------------------

async def test_status_wait_and_download(cli: Run, fake: FakeViggle, media: Path,
                                        api: ViggleClient) -> None:
    job = await api.renders.create(ref_image=media / "me.png", driving_video=media / "d1.mp4",
                                   background_mode="transparent")
    waited = await cli("wait", job.job_id, "-o", str(media / "w.mp4"), "--mask-output",
                       str(media / "w-mask.mp4"), *FAST)
    assert waited.code == 0, waited.err
    assert waited.out.startswith(f"job {job.job_id}: complete (render_done)\n  cdn_url: ")
    assert waited.err.splitlines()[-1] == f"{job.job_id}: complete"
    assert size(media / "w.mp4") == 2048 and size(media / "w-mask.mp4") == 2048
    status = await cli("status", job.job_id, "--json")
    (obj,) = status.json_lines()
    assert obj["job_id"] == job.job_id and obj["status"] == "complete"
    by_job = await cli("download", job.job_id, str(media / "d" / "again.mp4"), "--mask")
    assert by_job.code == 0 and "downloaded 2,048 bytes to" in by_job.out
    by_url = await cli("download", obj["cdn_url"], str(media / "by-url.mp4"), "--json")
    assert by_url.code == 0
    assert by_url.json_lines()[-1] == {"event": "downloaded", "key": obj["cdn_url"],
                                       "path": str(media / "by-url.mp4"), "bytes": 2048}
    assert fake.cdn_auth_headers == []  # the key never goes to the CDN


async def test_wait_for_a_failed_job_exits_1(cli: Run, fake: FakeViggle, media: Path,
                                             api: ViggleClient) -> None:
    fake.faults = Faults(render_failure_rate=1.0)
    job = await api.renders.create(ref_image=media / "me.png", driving_video=media / "d1.mp4")
    result = await cli("wait", job.job_id, *FAST)
    assert result.code == 1
    assert result.err.splitlines()[-1].startswith(
        f"error: render {job.job_id} ended failed [CS-UORC01-009]: ")


async def test_cancel_refunds_and_unfinished_jobs_cannot_be_downloaded(
        cli: Run, fake: FakeViggle, media: Path, api: ViggleClient) -> None:
    fake.settings.time_scale = 1.0  # keep the job running while the CLI looks at it
    job = await api.renders.create(ref_image=media / "me.png", driving_video=media / "d3.mp4")
    assert fake.balance() == 10_000 - 3
    early = await cli("download", job.job_id, str(media / "x.mp4"))
    assert early.code == 1
    assert f"job {job.job_id} is queued, so there is nothing to download yet" in early.err
    cancelled = await cli("cancel", job.job_id)
    assert cancelled.code == 0, cancelled.err
    assert cancelled.out.startswith(f"job {job.job_id}: cancelled")
    assert fake.balance() == 10_000
    status = await cli("status", job.job_id)
    assert status.out.startswith(f"job {job.job_id}: cancelled")


async def test_status_of_an_unknown_job_is_one_line_and_exit_1(cli: Run) -> None:
    result = await cli("status", "job_does_not_exist")
    assert result.code == 1
    assert len(result.err.strip().splitlines()) == 1
    assert result.err.startswith("error: HTTP 404")


# --- characters, scenes, credits -------------------------------------------------------------

async def test_characters_create_get_list_delete(cli: Run, fake: FakeViggle,
                                                 media: Path) -> None:
    created = await cli("characters", "create", "--name", "Alice", "--image",
                        str(media / "me.png"), "--json", *FAST)
    assert created.code == 0, created.err
    (char,) = created.json_lines()
    assert (char["name"], char["status"]) == ("Alice", "ready")
    got = await cli("characters", "get", char["id"])
    assert got.out == f"character {char['id']}: ready  name='Alice'\n"
    listed = await cli("characters", "list", "--json")
    assert [c["id"] for c in listed.json_lines()] == [char["id"]]
    assert (await cli("characters", "delete", char["id"])).code == 0
    assert (await cli("characters", "list", "--all")).out == ""
    assert fake.balance() == 10_000 - 1


async def test_scenes_create_import_list_delete(cli: Run, media: Path) -> None:
    made = await cli("scenes", "create", "--name", "S", "--video", str(media / "d2.mp4"),
                     "--json", *FAST)
    assert made.code == 0, made.err
    assert made.json_lines()[0]["status"] == "ready"
    imported = await cli("scenes", "import", "tmpl-duo-dance", "--name", "Duo", *FAST)
    assert imported.code == 0, imported.err
    # Get Scene does not list a template's people; the uuids from the import are kept.
    assert imported.out.endswith(
        ": ready  name='Duo'  segments=person_a1b2c3d4,person_e5f6g7h8\n")
    listed = await cli("scenes", "list", "--limit", "1", "--offset", "0", "--json")
    assert len(listed.json_lines()) == 1
    scene_id = made.json_lines()[0]["id"]
    assert (await cli("scenes", "delete", scene_id)).out == f"deleted scene {scene_id}\n"
    missing = await cli("scenes", "get", scene_id)
    assert missing.code == 1 and "HTTP 404" in missing.err


async def test_credits_in_each_output_mode(cli: Run) -> None:
    human = await cli("credits")
    assert (human.code, human.out) == (0, "balance: 10,000 credits\n")
    assert (await cli("--json", "credits")).json_lines()[0]["balance"] == 10_000
    assert (await cli("credits", "--json")).json_lines()[0]["balance"] == 10_000
    quiet = await cli("credits", "-q")
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")


# --- configuration and usage errors: exit 2, nothing sent -----------------------------------

async def test_missing_key_exits_2_but_status_needs_none(
        cli: Run, fake: FakeViggle, media: Path, monkeypatch: pytest.MonkeyPatch,
        api: ViggleClient) -> None:
    job = await api.renders.create(ref_image=media / "me.png", driving_video=media / "d1.mp4")
    requests = api_requests(fake)
    monkeypatch.delenv("VIGGLE_API_KEY")
    for argv in (["credits"], ["characters", "list"], ["cancel", job.job_id]):
        result = await cli(*argv)
        assert result.code == 2, argv
        assert "VIGGLE_API_KEY is not set" in result.err
    assert api_requests(fake) == requests
    assert (await cli("status", job.job_id)).code == 0


async def test_configuration_and_usage_errors_exit_2(cli: Run, fake: FakeViggle) -> None:
    insecure = await cli("credits", "--base-url", "http://example.com")
    assert insecure.code == 2 and "plain http to a non-loopback host" in insecure.err
    as_json = await cli("--json", "--base-url", "ftp://x", "credits")
    assert as_json.code == 2
    assert as_json.json_lines() == [{"event": "error", "type": "ConfigurationError",
                                     "error": "--base-url 'ftp://x' is not an absolute "
                                              "http(s) URL", "exit_code": 2}]
    for argv in (["render", "--ref-image", "x.png"], ["bulk", "m.csv", "--fast-fallback",
                                                      "maybe"], ["frobnicate"],
                 ["credits", "--json", "--quiet"]):
        result = await cli(*argv)
        assert result.code == 2, argv
        assert result.err
    assert api_requests(fake) == 0


async def test_help_documents_the_exit_codes(cli: Run) -> None:
    result = await cli("--help")
    assert result.code == 0
    for text in ("exit codes:", "0    all done", "1    some work failed", "2    nothing ran",
                 "130  interrupted", "VIGGLE_API_KEY", "VIGGLE_BASE_URL"):
        assert text in result.out
    bulk = await cli("bulk", "--help")
    assert "--dry-run" in bulk.out and "--resubmit-ambiguous" in bulk.out
    assert "130  interrupted" in bulk.out


async def test_the_key_never_appears_in_any_output(cli: Run, fake: FakeViggle,
                                                   media: Path) -> None:
    # cli() itself asserts the key is absent from stdout and stderr after every run; here
    # the commands that touch the key the most, in every output mode, including errors.
    fake.faults = Faults(render_failure_rate=1.0)
    for extra in ((), ("--json",), ("-q",)):
        await cli("credits", *extra)
        await cli("render", "--ref-image", str(media / "me.png"), "--driving-video",
                  str(media / "d1.mp4"), "-o", str(media / "k.mp4"), *FAST, *extra)
        await cli("characters", "get", "no-such-character", *extra)
    fake.settings.api_keys.clear()  # now the API rejects the key
    rejected = await cli("credits", "--json")
    assert rejected.code == 2  # a rejected key: nothing ran
    assert "HTTP 401" in rejected.err and SECRET not in rejected.out + rejected.err


async def test_demo_runs_on_its_own_fake_server(cli: Run, fake: FakeViggle,
                                                tmp_path: Path) -> None:
    result = await cli("demo", "--out", str(tmp_path / "demo"), "--json")
    assert result.code == 0, result.err
    objs = result.json_lines()
    summary = objs[-1]
    assert summary["event"] == "summary" and summary["failed"] == 0
    assert summary["done"] == len([o for o in objs if o["event"] == "completed"])
    # Clips and the characters/scenes they reuse are counted apart: about 20 clips.
    assert summary["clips"] == 20 and summary["assets"] == 4
    assert summary["clips"] + summary["assets"] == summary["done"]
    assert summary["fallbacks"] >= 1 and summary["credits"] > 0
    assert len(list((tmp_path / "demo").glob("*.mp4"))) >= 18
    assert api_requests(fake) == 0  # its own server, not the one in the environment
    human = json.dumps(summary)
    assert SECRET not in human
