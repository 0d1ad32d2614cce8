"""What a new user meets in the first hour: money told straight on reruns, rows that
ended cancelled or failed rendered again on request, timeouts that do not claim a
failure, messages in command-line words, one exit code per kind of problem, and numbers
written for people."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from clihelp import BULK_FAST, FAST, SECRET, Run, api_requests, write

from viggle_async import ViggleClient
from viggle_async._protocol import BACKGROUND_MODES
from viggle_async.testing import DEFAULT_API_KEY, FakeViggle, Faults

TWO_RENDERS = ("key,ref_image,driving_video,output\n"
               "a,me.png,d2.mp4,a.mp4\nb,me.png,d3.mp4,b.mp4\n")


# --- money on reruns (item 5) and rows that ended earlier (item 4) ---------------------------

async def test_a_rerun_says_it_spends_nothing_and_what_earlier_runs_spent(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    manifest = write(media, "m.csv", TWO_RENDERS)
    journal = str(media / "j.db")
    first = await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal)
    assert first.code == 0, first.err
    assert "this run submits 2 rows, about 5 credits" in first.err
    assert "this run spent 5 credits;" in first.out
    balance = fake.balance()
    again = await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal)
    assert again.code == 0, again.err
    assert "this run submits 0 rows, about 0 credits" in again.err
    assert "2 finished and 0 running from earlier runs cost nothing more" in again.err
    assert "this run spent 0 credits (earlier runs: 5 credits)" in again.out
    assert fake.balance() == balance
    as_json = await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal, "--json")
    plan = as_json.json_lines()[0]
    summary = as_json.json_lines()[-1]
    assert (plan["event"], plan["submit"], plan["credits"]) == ("plan", 0, 0)
    assert (summary["credits_this_run"], summary["credits_earlier_runs"]) == (0, 5)


async def test_rows_that_ended_failed_render_again_only_when_asked(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    manifest = write(media, "m.csv", TWO_RENDERS)
    journal = str(media / "j.db")
    fake.faults = Faults(render_failure_rate=1.0)
    assert (await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal)).code == 1
    fake.faults = Faults()
    creates = len(fake.creates)
    plain = await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal)
    assert plain.code == 1
    assert "ended failed in an earlier run" in plain.err
    assert "pass --resubmit-ended cancelled,failed to submit again" in plain.err
    assert len(fake.creates) == creates
    again = await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal,
                      "--resubmit-ended", "cancelled,failed", "--report",
                      str(media / "r.json"))
    assert again.code == 0, again.err
    # The cost is said before anything is sent, and never asked about.
    assert ("this run submits 2 rows, about 5 credits; 2 of them ended cancelled/failed "
            "earlier and are submitted again") in again.err
    assert len(fake.creates) == creates + 2
    report = json.loads((media / "r.json").read_text())
    assert {o["state"] for o in report["outcomes"]} == {"complete"}
    # Now they are finished: a third run with the same option submits nothing.
    third = await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal,
                      "--resubmit-ended", "failed")
    assert third.code == 0 and len(fake.creates) == creates + 2


@pytest.mark.parametrize("value", ["done", "", "cancelled,complete"])
async def test_resubmit_ended_names_only_ended_states(cli: Run, fake: FakeViggle,
                                                      media: Path, value: str) -> None:
    manifest = write(media, "m.csv", TWO_RENDERS)
    result = await cli("bulk", str(manifest), "--journal", str(media / "j.db"),
                       "--resubmit-ended", value)
    assert result.code == 2
    assert "name cancelled, failed or both (cancelled,failed)" in result.err
    assert api_requests(fake) == 0


# --- render --timeout (item 7) ----------------------------------------------------------------

async def test_render_timeout_says_the_job_goes_on_and_how_to_wait(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    fake.settings.time_scale = 1.0  # a 3 s clip takes seconds: longer than the timeout
    out = media / "slow.mp4"
    result = await cli("render", "--ref-image", str(media / "me.png"), "--driving-video",
                       str(media / "d3.mp4"), "-o", str(out), "--timeout", "0.2", *FAST)
    assert result.code == 1
    (job_id,) = [c.result_id for c in fake.creates]
    assert (f"slow: still rendering after --timeout 0.2 s (job {job_id}); the job goes on "
            f"and is charged. Wait for it again: viggle-async wait {job_id} -o {out}") \
        in result.err
    assert "failed" not in result.err and "deadline" not in result.err
    assert fake.job(job_id).status not in ("failed", "cancelled")


# --- command-line words (item 8) --------------------------------------------------------------

@pytest.mark.parametrize(("extra", "expected"), [
    (["--driving-video-url", "https://example.com/v.mp4", "--fast"],
     "error: --fast: needs a --driving-video upload or a --scene-id [CS-UORC01-002]. Fix: "
     "upload the video as --driving-video, use a scene, or drop --fast"),
    (["--driving-video", "d2.mp4", "--background-mode", "solid", "--bg-color", "0,0,300"],
     "--bg-color:"),
    (["--driving-video", "d2.mp4", "--background-mode", "sepia"], "--background-mode:"),
])
async def test_render_errors_name_command_line_flags(cli: Run, fake: FakeViggle, media: Path,
                                                     extra: list[str], expected: str) -> None:
    extra = [str(media / x) if x.endswith(".mp4") and "/" not in x else x for x in extra]
    result = await cli("render", "--ref-image", str(media / "me.png"), *extra,
                       "-o", str(media / "x.mp4"))
    assert result.code == 2
    (line,) = result.err.splitlines()
    assert line.startswith(expected) or expected in line, line
    for python in ("=True", "=False", "3-tuple", "fast=", "_mode", "bg_color", "ref_image"):
        assert python not in line, line
    assert api_requests(fake) == 0


async def test_background_modes_are_the_same_in_help_and_in_the_error(
        cli: Run, media: Path) -> None:
    help_text = (await cli("render", "--help")).out
    error = (await cli("render", "--ref-image", str(media / "me.png"), "--driving-video",
                       str(media / "d2.mp4"), "--background-mode", "sepia",
                       "-o", str(media / "x.mp4"))).err
    for mode in BACKGROUND_MODES:
        assert mode in help_text and mode in error


async def test_download_of_an_ended_job_does_not_advise_waiting(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    async with ViggleClient(base_url=fake.base_url) as api:
        fake.settings.time_scale = 1.0
        job = await api.renders.create(ref_image=media / "me.png",
                                       driving_video=media / "d3.mp4")
        await api.renders.cancel(job.job_id)
    result = await cli("download", job.job_id, str(media / "x.mp4"))
    assert result.code == 1
    assert f"job {job.job_id} ended cancelled, so it has no output" in result.err
    assert "wait" not in result.err


# --- one exit code per kind of problem; help per command (item 9) -----------------------------

async def test_an_unreachable_api_is_one_line_and_exit_2_for_every_command(
        cli: Run, media: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    manifest = write(media, "m.csv", TWO_RENDERS)
    # (Each waits out the client's connect retries, so three commands: the direct read,
    # and the two that create, through their shared preflight.)
    commands = [["credits"], ["bulk", str(manifest)],
                ["render", "--ref-image", str(media / "me.png"), "--driving-video",
                 str(media / "d2.mp4"), "-o", str(media / "x.mp4")]]
    for argv in commands:
        result = await cli(*argv, "--base-url", url)
        assert result.code == 2, (argv, result.err)
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, result.err)
        assert "127.0.0.1" in lines[0]


async def test_help_shows_only_what_each_command_uses(cli: Run) -> None:
    demo = (await cli("demo", "--help")).out
    fake_server = (await cli("fake-server", "--help")).out
    for text in (demo, fake_server):
        assert "--base-url" not in text and "VIGGLE_API_KEY " not in text
    assert "130  interrupted" in demo
    # fake-server's own exit codes, not bulk's ("every row complete").
    assert "0    stopped with Ctrl-C or SIGTERM" in fake_server and "row" not in fake_server
    assert "export VIGGLE_BASE_URL=" in fake_server and "--port" in fake_server
    assert "--dry-run" not in fake_server
    assert "--base-url" in (await cli("render", "--help")).out


async def test_numbers_and_plurals_are_written_for_people(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    fake.top_up(99_985_200)
    assert (await cli("credits")).out == "balance: 99,995,200 credits\n"
    await cli("characters", "create", "--name", "A", "--image", str(media / "me.png"),
              "--no-wait")
    listed = await cli("characters", "list")
    assert listed.err.strip().splitlines()[-1] == "1 character"


def test_fake_server_prints_a_line_to_paste(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from viggle_async.cli._app import main\n"
            "import signal, threading, os\n"
            "threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
            "sys.exit(main(['fake-server', '--port', '0']))")
    # Even in a shell where an earlier fake-server's line was pasted: its key is no secret.
    env = {**os.environ, "VIGGLE_API_KEY": DEFAULT_API_KEY}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    base = next(x for x in lines if x.startswith("base_url=")).partition("=")[2]
    key = next(x for x in lines if x.startswith("api_key=")).partition("=")[2]
    assert key == DEFAULT_API_KEY
    assert f"export VIGGLE_BASE_URL={base} VIGGLE_API_KEY={key}" in lines


# --- template segments across processes (item 12) --------------------------------------------

async def test_scenes_get_shows_the_segments_an_earlier_import_saw(
        cli: Run, fake: FakeViggle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    imported = await cli("scenes", "import", "tmpl-duo-dance", "--json", *FAST)
    assert imported.code == 0, imported.err
    scene = imported.json_lines()[-1]
    uuids = [s["uuid"] for s in scene["segments"]]
    assert uuids == ["person_a1b2c3d4", "person_e5f6g7h8"]
    got = await cli("scenes", "get", scene["id"])
    assert got.out.endswith("segments=person_a1b2c3d4,person_e5f6g7h8\n")
    cache_root = tmp_path / "cache" / "viggle-async" / "segments"
    assert all(SECRET not in str(p) for p in cache_root.rglob("*"))
    # Turned off by the flag or the environment: only what the API says.
    assert "segments=" not in (await cli("scenes", "get", scene["id"], "--no-cache")).out
    monkeypatch.setenv("VIGGLE_ASYNC_NO_CACHE", "1")
    assert "segments=" not in (await cli("scenes", "get", scene["id"])).out
    monkeypatch.delenv("VIGGLE_ASYNC_NO_CACHE")
    # Another account does not see them; deleting the scene forgets them.
    fake.settings.api_keys["sk-other"] = 10
    monkeypatch.setenv("VIGGLE_API_KEY", "sk-other")
    assert "segments=" not in (await cli("scenes", "get", scene["id"])).out
    monkeypatch.setenv("VIGGLE_API_KEY", SECRET)
    assert (await cli("scenes", "delete", scene["id"])).code == 0
    assert list(cache_root.rglob("*.json")) == []


# --- a failed run never exits 0 (item 13) ----------------------------------------------------

async def test_a_journal_whose_jobs_the_server_does_not_know_fails_the_run(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    manifest = write(media, "m.csv", TWO_RENDERS)
    journal = str(media / "j.db")
    assert (await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal)).code == 0
    (media / "a.mp4").unlink()  # an output deleted: the rerun resumes job a to download it
    # A new server (the example's embedded fake, restarted) has never heard of that job.
    async with FakeViggle(api_keys={SECRET: 100}, time_scale=1000.0) as other:
        for extra in ((), ("--json",), ("-q",)):
            rerun = await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal,
                              "--base-url", other.base_url, "--report",
                              str(media / "r.json"), *extra)
            assert rerun.code == 1, (extra, rerun.out, rerun.err)
            report = json.loads((media / "r.json").read_text())
            assert report["summary"]["exit_code"] == 1
            states = {o["key"]: o["state"] for o in report["outcomes"]}
            assert states == {"a": "failed", "b": "skipped"}
            if not extra:
                assert "1 job from the journal is unknown to http" in rerun.err
                assert "use a new --journal" in rerun.err
        assert other.creates == []  # never paid again silently


@pytest.mark.parametrize("module", ["rich", "_app"])  # "_app": its relative import
def test_ctrl_c_while_the_command_loads_is_one_line_and_exit_130(module: str) -> None:
    # A newcomer's Ctrl-C in the first half second on a busy machine printed a 40-line
    # import traceback. SIGINT is delivered while the command imports ``module``.
    import subprocess
    import sys

    code = ("import builtins, os, signal, sys\n"
            "import viggle_async.cli as cli\n"
            "real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            f"    if name == {module!r}:\n"
            "        builtins.__import__ = real\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "sys.modules.pop('rich', None); sys.modules.pop('viggle_async.cli._app', None)\n"
            "sys.exit(cli.main(['credits']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "interrupted while starting: nothing was sent\n"
