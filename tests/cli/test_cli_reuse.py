"""``viggle-async bulk --reuse-assets`` (issue 15): the dry run shows both plans side by side,
and a real run sends shared videos as scenes and images as characters, once each."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from clihelp import BULK_FAST, Run, api_requests, size, write

from viggle_async.testing import FakeViggle, make_png


def manifest(media: Path) -> Path:
    """3 videos x 4 images: d1 and d2 with every image, d3 with two (below a threshold
    of 3). Images p0..p3 have distinct content; p0b is p0's bytes under another name."""
    for i in range(4):
        (media / f"p{i}.png").write_bytes(make_png(16, 16, rgb=(i * 40, 90, 10)))
    (media / "p0b.png").write_bytes((media / "p0.png").read_bytes())
    rows = []
    for v, count in ((1, 4), (2, 4), (3, 2)):
        for i in range(count):
            image = "p0b.png" if (v, i) == (2, 0) else f"p{i}.png"
            rows.append({"key": f"d{v}-p{i}", "ref_image": image,
                         "driving_video": f"d{v}.mp4", "output": f"out/d{v}-p{i}.mp4"})
    return write(media, "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_dry_run_prints_both_plans_and_sends_nothing(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    path = manifest(media)
    result = await cli("bulk", str(path), "--dry-run", "--reuse-assets",
                       "--reuse-min-renders", "3")
    assert result.code == 0, result.err
    mb = (4 * size(media / "d1.mp4") + 4 * size(media / "d2.mp4") + 2 * size(media / "d3.mp4")
          + sum(size(media / f"p{i}.png") for i in (0, 1, 2, 3, 0, 1, 2, 3, 0, 1))) / 1e6
    on_demand = next(line for line in result.out.splitlines() if "on demand" in line)
    # ceil(seconds) per render: 4 x 1 + 4 x 2 + 2 x 3 credits; every file uploaded per row.
    assert on_demand.split()[2] == "18" and f"{mb:,.1f} MB" in on_demand
    reuse = next(line for line in result.out.splitlines() if line.strip().startswith("reuse "))
    assert reuse.split()[1] == "22"  # + 4 characters (p0 and p0b are one image)
    assert "2 scenes, 4 characters" in reuse
    assert "asset reuse: 8 rows of 10 sent as character_id + scene_id" in result.out
    assert result.out.splitlines()[-1].startswith("dry run: 10 rows valid; estimated cost 22")
    assert api_requests(fake) == 0

    as_json = (await cli("bulk", str(path), "--dry-run", "--reuse-assets",
                         "--reuse-min-renders", "3", "--json")).json_lines()
    (plan,) = [o for o in as_json if o["event"] == "reuse_plan"]
    assert plan["on_demand"]["credits"] == 18 and plan["reuse"]["credits"] == 22
    assert plan["on_demand"]["upload_bytes"] == round(mb * 1e6)
    assert plan["reuse"]["upload_bytes"] == (
        size(media / "d1.mp4") + size(media / "d2.mp4") + 2 * size(media / "d3.mp4")
        + sum(size(media / f"p{i}.png") for i in range(4))
        + size(media / "p0.png") + size(media / "p1.png"))
    assert (plan["reuse"]["scenes"], plan["reuse"]["characters"]) == (2, 4)

    capped = (await cli("bulk", str(path), "--dry-run", "--reuse-assets", "--json",
                        "--reuse-max-extra-credits", "0")).json_lines()
    (plan,) = [o for o in capped if o["event"] == "reuse_plan"]
    assert plan["reuse"] == {**plan["on_demand"]} and plan["skipped_groups"] == 3


async def test_run_uploads_each_shared_file_once(
        cli: Run, fake: FakeViggle, media: Path) -> None:
    path = manifest(media)
    balance = fake.balance()
    result = await cli("bulk", str(path), "--reuse-assets", "--reuse-min-renders", "3",
                       "--journal", str(media / "j.sqlite"), "--report",
                       str(media / "report.json"), *BULK_FAST)
    assert result.code == 0, result.err
    # The characters are paid too: 18 credits of renders + 4 characters.
    summary = json.loads((media / "report.json").read_text())["summary"]
    assert summary["credits_this_run"] == 22 == balance - fake.balance()
    assert summary["reuse_assets"] == {"created": 6, "credits": 4, "reused": 0, "failed": 0}
    assert "this run spent 22 credits" in result.out
    kinds = [c.kind for c in fake.creates if c.status == 200]
    assert (kinds.count("scene"), kinds.count("character"), kinds.count("render")) == (2, 4, 10)
    sent = [f.sha256 for c in fake.creates if c.status == 200 for f in c.files]
    assert sent.count(sha(media / "d1.mp4")) == 1 and sent.count(sha(media / "d2.mp4")) == 1
    assert sent.count(sha(media / "d3.mp4")) == 2  # below the threshold: on demand
    for v, count in ((1, 4), (2, 4), (3, 2)):
        for i in range(count):
            assert size(media / "out" / f"d{v}-p{i}.mp4") == 2048
    again = await cli("bulk", str(path), "--reuse-assets", "--reuse-min-renders", "3",
                      "--journal", str(media / "j.sqlite"), *BULK_FAST)
    assert again.code == 0, again.err
    assert len([c for c in fake.creates if c.status == 200]) == 16  # nothing new


@pytest.mark.parametrize("option", [("--reuse-max-extra-credits", "5"),
                                    ("--reuse-max-extra-percent", "10"),
                                    ("--reuse-fallback",), ("--reuse-min-renders", "3")])
async def test_reuse_options_need_reuse_assets(
        cli: Run, fake: FakeViggle, media: Path, option: tuple[str, ...]) -> None:
    result = await cli("bulk", str(manifest(media)), "--dry-run", *option)
    assert result.code == 2
    assert f"{option[0]} works with --reuse-assets" in result.err
    assert api_requests(fake) == 0
