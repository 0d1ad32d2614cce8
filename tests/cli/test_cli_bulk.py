"""``viggle-async bulk``: dry runs, dependencies between rows, the report, JSON lines,
resuming from the journal, budgets and exit codes, against the fake server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clihelp import BULK_FAST, Run, api_requests, size, write

from viggle_async import SQLiteJournal
from viggle_async.testing import FakeViggle, Faults

# Two characters' worth of work: a character (1 credit), a template scene (free), an
# uploaded scene (free), an on-demand fast render (2 s x 2), a render of the character on
# the uploaded scene (3 s: priced from the scene row's video) and a two-person template
# render (priced from estimated_seconds) whose mapping names both characters by key.
ASSETS_AND_RENDERS = "\n".join([
    '{"key": "alice", "kind": "character", "name": "Alice", "image": "me.png"}',
    '{"key": "bob", "kind": "character", "name": "Bob", "image": "me.png"}',
    '{"key": "duo", "kind": "scene", "template_id": "tmpl-duo-dance", "name": "Duo"}',
    '{"key": "studio", "kind": "scene", "name": "Studio", "video": "d3.mp4"}',
    '{"key": "c1", "ref_image": "me.png", "driving_video": "d2.mp4", "fast": true, '
    '"output": "out/c1.mp4"}',
    '{"key": "c2", "character_id": "alice", "scene_id": "@studio", "output": "out/c2.mp4"}',
    '{"key": "c3", "scene_id": "duo", "character_mapping": {"person_a1b2c3d4": "alice", '
    '"person_e5f6g7h8": "@bob"}, "estimated_seconds": 8, "background_mode": "transparent", '
    '"output": "out/c3.mp4", "mask_output": "out/c3-mask.mp4"}',
]) + "\n"
# 1 + 1 + 0 + 0 + 4 + 3 + 8
EXPECTED_CREDITS = 17


def _by_key(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["key"]: o for o in objs}


async def test_dry_run_validates_and_prices_every_row_and_sends_nothing(
        cli: Run, fake: FakeViggle, media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write(media, "m.jsonl", ASSETS_AND_RENDERS)
    monkeypatch.delenv("VIGGLE_API_KEY")  # a dry run needs no key
    balance = fake.balance()
    result = await cli("bulk", str(manifest), "--dry-run")
    assert result.code == 0, result.err
    assert result.out.splitlines()[-1] == (
        f"dry run: 7 rows valid; estimated cost {EXPECTED_CREDITS} credits; nothing was sent")
    assert "render     c1: 4 fast" in result.out
    assert "character  alice: 1" in result.out and "scene      duo: 0" in result.out
    as_json = await cli("bulk", str(manifest), "--dry-run", "--json")
    objs = as_json.json_lines()
    rows = _by_key([o for o in objs if o["event"] == "estimate"])
    assert {k: r["credits"] for k, r in rows.items()} == {
        "alice": 1, "bob": 1, "duo": 0, "studio": 0, "c1": 4, "c2": 3, "c3": 8}
    assert rows["c1"]["fast"] is True and rows["c1"]["duration_s"] == pytest.approx(2.0)
    assert objs[-1]["event"] == "summary" and objs[-1]["credits"] == EXPECTED_CREDITS
    assert api_requests(fake) == 0
    assert fake.balance() == balance
    assert not (media / "out").exists()


async def test_dry_run_over_the_budget_exits_1(cli: Run, fake: FakeViggle, media: Path) -> None:
    manifest = write(media, "m.jsonl", ASSETS_AND_RENDERS)
    result = await cli("bulk", str(manifest), "--dry-run", "--budget", "10",
                       "--report", str(media / "dry.json"))
    assert result.code == 1
    assert "over the budget of 10" in result.out
    report = json.loads((media / "dry.json").read_text())
    assert report["dry_run"] is True and report["credits"] == EXPECTED_CREDITS
    assert len(report["rows"]) == 7
    assert api_requests(fake) == 0


async def test_renders_use_the_characters_and_scenes_their_rows_create(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    manifest = write(media, "m.jsonl", ASSETS_AND_RENDERS)
    balance = fake.balance()
    report_path = media / "report.json"
    result = await cli("bulk", str(manifest), *BULK_FAST, "--report", str(report_path))
    assert result.code == 0, result.err
    assert result.out.startswith("7 rows: 7 complete; this run spent 17 credits; 0 retries;")
    assert fake.balance() == balance - EXPECTED_CREDITS
    report = json.loads(report_path.read_text())
    outcomes = _by_key(report["outcomes"])
    assert [o["key"] for o in report["outcomes"]] == [
        "alice", "bob", "duo", "studio", "c1", "c2", "c3"]
    assert set(outcomes["c1"]) == {
        "line", "key", "kind", "state", "job_id", "asset_id", "status", "outputs", "credits",
        "attempts", "fast", "fallback_used", "error", "error_code", "error_type", "downloaded",
        "download_error", "output", "spent_this_run"}
    assert outcomes["c1"] | {"job_id": None} == {
        "line": 5, "key": "c1", "kind": "render", "state": "complete", "job_id": None,
        "asset_id": None, "status": "complete", "outputs": [str(media / "out/c1.mp4")],
        "credits": 4, "attempts": 1, "fast": True, "fallback_used": False, "error": None,
        "error_code": None, "error_type": None, "downloaded": True, "download_error": None,
        "output": str(media / "out/c1.mp4"), "spent_this_run": True}
    assert outcomes["alice"]["kind"] == "character" and outcomes["alice"]["credits"] == 1
    assert outcomes["c2"]["credits"] == 3
    # The renders were sent the ids the asset rows created.
    fields = {c.result_id: c.fields for c in fake.creates if c.kind == "render"}
    c2 = fields[outcomes["c2"]["job_id"]]
    assert (c2["character_id"], c2["scene_id"]) == (outcomes["alice"]["asset_id"],
                                                   outcomes["studio"]["asset_id"])
    mapping = json.loads(fields[outcomes["c3"]["job_id"]]["character_mapping"])
    assert mapping == {"person_a1b2c3d4": outcomes["alice"]["asset_id"],
                       "person_e5f6g7h8": outcomes["bob"]["asset_id"]}
    assert outcomes["c3"]["outputs"] == [str(media / "out/c3.mp4"),
                                         str(media / "out/c3-mask.mp4")]
    outputs = [p for o in outcomes.values() for p in o["outputs"]]
    assert [size(p) for p in outputs] == [2048] * 4
    assert report["summary"]["credits"] == EXPECTED_CREDITS


async def test_rerun_with_the_journal_skips_finished_rows(cli: Run, fake: FakeViggle,
                                                          media: Path) -> None:
    manifest = write(media, "m.jsonl", ASSETS_AND_RENDERS)
    journal = str(media / "run.journal")
    first = await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal)
    assert first.code == 0, first.err
    creates = len(fake.creates)
    balance = fake.balance()
    second = await cli("bulk", str(manifest), *BULK_FAST, "--journal", journal, "--json",
                       "--report", str(media / "again.json"))
    assert second.code == 0, second.err
    summary = second.json_lines()[-1]
    assert summary["states"] == {"skipped": 7} and summary["credits"] == 0
    assert len(fake.creates) == creates and fake.balance() == balance
    report = json.loads((media / "again.json").read_text())
    assert {o["state"] for o in report["outcomes"]} == {"skipped"}


async def test_json_lines_stream_every_event_then_a_summary_and_failures_exit_1(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    fake.faults = Faults(render_failure_rate=1.0)
    manifest = write(media, "m.csv", "key,ref_image,driving_video,output\n"
                                     "a,me.png,d1.mp4,a.mp4\nb,me.png,d2.mp4,b.mp4\n")
    result = await cli("bulk", str(manifest), *BULK_FAST, "--json",
                       "--report", str(media / "r.json"))
    assert result.code == 1
    objs = result.json_lines()
    kinds = [o["event"] for o in objs]
    assert kinds.count("queued") == 2 and kinds.count("submitted") == 2
    assert kinds.count("failed") == 2 and "progress" in kinds and "uploading" in kinds
    assert objs[-1]["event"] == "summary"
    assert objs[-1] | {"elapsed_s": 0} == {
        "event": "summary", "total": 2, "done": 0, "failed": 2, "states": {"failed": 2},
        "credits": 0, "credits_this_run": 0, "credits_earlier_runs": 0, "running": 0,
        "credits_running": 0, "not_downloaded": 0, "retries": 0, "fallbacks": 0,
        "elapsed_s": 0, "exit_code": 1}
    failed = next(o for o in objs if o["event"] == "failed")["outcome"]
    assert failed["state"] == "failed" and failed["error_code"] == "CS-UORC01-009"
    report = json.loads((media / "r.json").read_text())
    assert [o["error_code"] for o in report["outcomes"]] == ["CS-UORC01-009"] * 2


async def test_budget_leaves_the_rest_not_submitted(cli: Run, fake: FakeViggle,
                                                    media: Path) -> None:
    manifest = write(media, "m.csv", "key,ref_image,driving_video,output\n"
                                     "a,me.png,d3.mp4,a.mp4\nb,me.png,d3.mp4,b.mp4\n")
    result = await cli("bulk", str(manifest), *BULK_FAST, "--budget", "4", "--max-active-jobs",
                       "1", "--report", str(media / "r.json"))
    assert result.code == 1
    report = json.loads((media / "r.json").read_text())
    assert [o["state"] for o in report["outcomes"]] == ["complete", "not_submitted"]
    assert "over credit_budget" in report["outcomes"][1]["error"]
    assert "b: not_submitted: over credit_budget" in result.err
    assert fake.count("POST", "/api/render") == 1


async def test_fast_fallback_and_backoff_are_visible(cli: Run, fake: FakeViggle,
                                                     media: Path) -> None:
    fake.faults = Faults(fast_unavailable=True)
    manifest = write(media, "m.csv", "key,ref_image,driving_video,fast,output\n"
                                     "a,me.png,d1.mp4,true,a.mp4\n")
    balance = fake.balance()
    result = await cli("bulk", str(manifest), *BULK_FAST, "--fast-fallback", "attempts:2",
                       "--capacity-backoff", "0.01:0.02", "--report", str(media / "r.json"))
    assert result.code == 0, result.err
    assert "a: fast mode unavailable after 2 tries; submitting in standard mode" in result.err
    assert "a: no fast capacity; retrying in" in result.err
    assert "1 fast fallback;" in result.out
    (outcome,) = json.loads((media / "r.json").read_text())["outcomes"]
    assert outcome["fallback_used"] is True and outcome["fast"] is False
    assert outcome["attempts"] == 3
    assert fake.balance() == balance - 1  # standard: 1 credit per second, not 2


async def test_a_real_run_without_a_key_exits_2_and_sends_nothing(
        cli: Run, fake: FakeViggle, media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGGLE_API_KEY")
    manifest = write(media, "m.csv", "key,ref_image,driving_video,output\na,me.png,d1.mp4,a.mp4\n")
    result = await cli("bulk", str(manifest))
    assert result.code == 2
    assert "VIGGLE_API_KEY is not set" in result.err
    assert api_requests(fake) == 0


async def test_a_rejected_key_exits_2_before_any_create(
        cli: Run, fake: FakeViggle, media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGGLE_API_KEY", "sk-wrong-key-000")
    manifest = write(media, "m.csv", "key,ref_image,driving_video,output\na,me.png,d1.mp4,a.mp4\n")
    result = await cli("bulk", str(manifest), "--json")
    assert result.code == 2
    assert "the API rejected VIGGLE_API_KEY" in result.err
    assert result.json_lines()[-1]["exit_code"] == 2
    assert fake.creates == []
    assert "sk-wrong-key-000" not in result.out + result.err


async def test_a_journal_in_use_by_another_run_exits_2(cli: Run, fake: FakeViggle,
                                                       media: Path) -> None:
    manifest = write(media, "m.csv", "key,ref_image,driving_video,output\na,me.png,d1.mp4,a.mp4\n")
    path = media / "run.journal"
    async with await SQLiteJournal.open(path):
        result = await cli("bulk", str(manifest), "--journal", str(path))
    assert result.code == 2
    assert result.err.startswith(f"error: cannot use the journal {str(path)!r}")
    # Only the balance read (the key and the API are checked before the journal is
    # opened, so a rejected key leaves no journal file): nothing was created.
    assert fake.creates == [] and set(fake.request_counts) == {("GET", "/api/credits")}


async def test_quiet_prints_only_failures(cli: Run, fake: FakeViggle, media: Path) -> None:
    fake.faults = Faults(render_failure_rate=1.0)
    manifest = write(media, "m.csv", "key,ref_image,driving_video,output\na,me.png,d1.mp4,a.mp4\n")
    result = await cli("bulk", str(manifest), *BULK_FAST, "--quiet")
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith("a: failed (job ")
    assert len(result.err.splitlines()) == 1


async def test_json_lines_report_download_progress_to_the_full_size(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    manifest = write(media, "m.csv", "key,ref_image,driving_video,output\na,me.png,d1.mp4,a.mp4\n")
    result = await cli("bulk", str(manifest), *BULK_FAST, "--json")
    assert result.code == 0, result.err
    objs = result.json_lines()
    downloading = [o for o in objs if o["event"] == "downloading"]
    size = fake.settings.output_bytes
    assert downloading and downloading[-1] | {"path": ""} == {
        "event": "downloading", "key": "a", "path": "", "received": size, "total": size}
    assert (media / "a.mp4").stat().st_size == size
