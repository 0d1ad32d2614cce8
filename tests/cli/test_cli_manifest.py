"""Manifest validation: every malformed row is reported by line, row and field, before
anything is sent (exit 2, the server sees no request)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clihelp import Run, api_requests, write

from viggle_async.cli._manifest import parse_manifest
from viggle_async.testing import FakeViggle, write_mp4

HEAD = "key,kind,name,image,ref_image,driving_video,character_id,scene_id,fast,output\n"

# (case, file name, content, [(line, field, fragment of the message)])
MALFORMED = [
    ("unknown column", "m.csv",
     "key,ref_imgae,driving_video,output\nc1,me.png,d2.mp4,o.mp4\n",
     [(1, "ref_imgae", "unknown column 'ref_imgae'. Fix: did you mean 'ref_image'?")]),
    ("missing key", "m.csv", HEAD + ",,,,me.png,d2.mp4,,,,o.mp4\n",
     [(2, "key", "is missing")]),
    ("duplicate key", "m.csv",
     HEAD + "c1,,,,me.png,d2.mp4,,,,o1.mp4\nc1,,,,me.png,d1.mp4,,,,o2.mp4\n",
     [(3, "key", "'c1' is already used on line 2")]),
    ("bad JSON line", "m.jsonl",
     '{"key": "c1", "ref_image": "me.png", "driving_video": "d2.mp4"}\n{"key": "c2",\n',
     [(2, None, "is not valid JSON")]),
    ("JSON line not an object", "m.jsonl", '["c1", "me.png"]\n',
     [(1, None, "is a JSON list, not an object")]),
    ("fast=maybe", "m.csv", HEAD + "c1,,,,me.png,d2.mp4,,,maybe,o.mp4\n",
     [(2, "fast", "'maybe' is not a boolean. Fix: write true or false")]),
    ("estimated_seconds not a number", "m.jsonl",
     '{"key": "c1", "character_id": "char_1", "scene_id": "s1", "estimated_seconds": "long"}\n',
     [(1, "estimated_seconds", "'long' is not a positive number")]),
    ("a string field given a number", "m.jsonl",
     '{"key": "a", "kind": "character", "name": 3, "image": "me.png"}\n',
     [(1, "name", "must be a string, got number")]),
    ("file that does not exist", "m.csv", HEAD + "c1,,,,nope.png,d2.mp4,,,,o.mp4\n",
     [(2, "ref_image", "file not found")]),
    ("not a video", "m.csv", HEAD + "c1,,,,me.png,me.png,,,,o.mp4\n",
     [(2, "driving_video", "")]),
    ("reference to a key not in the manifest", "m.csv",
     HEAD + "c1,,,,,,@bob,scene_1,,o.mp4\n",
     [(2, "character_id", "refers to key 'bob', which no row of the manifest has")]),
    ("dependency cycle", "m.csv",
     HEAD + "r1,,,,,,r2,s_1,,o1.mp4\nr2,,,,,,r1,s_1,,o2.mp4\n",
     [(3, "character_id", "dependency cycle: r1 -> r2 -> r1")]),
    ("reference to the wrong kind of row", "m.csv",
     HEAD + "alice,character,Alice,me.png,,,,,,\nc1,,,,,,alice,alice,,o.mp4\n",
     [(3, "scene_id", "key 'alice' is a character row, not a scene row")]),
    ("a field of another kind", "m.csv", HEAD + "c1,,,me.png,me.png,d2.mp4,,,,o.mp4\n",
     [(2, "image", "does not apply to a render row")]),
    ("unknown kind", "m.csv", HEAD + "c1,movie,,,me.png,d2.mp4,,,,o.mp4\n",
     [(2, "kind", "'movie' is not a kind")]),
    ("character without a name", "m.csv", HEAD + "a,character,,me.png,,,,,,\n",
     [(2, "name", "is required for a character")]),
    ("character without an image", "m.csv", HEAD + "a,character,Alice,,,,,,,\n",
     [(2, "image", "is required")]),
    ("bad character_mapping", "m.csv",
     "key,scene_id,character_mapping,output\nc1,s_1,{not json,o.mp4\n",
     [(2, "character_mapping", "is not valid JSON")]),
    ("conflicting inputs", "m.csv",
     "key,ref_image,ref_image_url,driving_video,output\n"
     "c1,me.png,https://example.com/a.png,d2.mp4,o.mp4\n",
     [(2, "ref_image", "cannot be combined with ref_image_url")]),
    ("bg_color without solid", "m.csv",
     'key,ref_image,driving_video,bg_color,output\nc1,me.png,d2.mp4,"0,255,0",o.mp4\n',
     [(2, "bg_color", "only valid with background_mode solid [CS-UORC01-002]")]),
    ("too many cells", "m.csv",
     "key,ref_image,driving_video,output\nc1,me.png,d2.mp4,o.mp4,0,255,0\n",
     [(2, None, "has 7 cells but the header has 4")]),
    ("two rows writing one output", "m.csv",
     HEAD + "c1,,,,me.png,d2.mp4,,,,o.mp4\nc2,,,,me.png,d1.mp4,,,,o.mp4\n",
     [(3, "output", "is also the output of key 'c1'")]),
    ("template scene with a video", "m.jsonl",
     '{"key": "s", "kind": "scene", "template_id": "tmpl-duo-dance", "video": "d2.mp4"}\n',
     [(1, "video", "cannot be combined with template_id")]),
]


@pytest.mark.parametrize(("content", "name", "expected"),
                         [pytest.param(c, n, e, id=case) for case, n, c, e in MALFORMED])
async def test_malformed_rows_are_reported_by_line_and_field_and_nothing_is_sent(
        cli: Run, fake: FakeViggle, media: Path, content: str, name: str,
        expected: list[tuple[int, str | None, str]]) -> None:
    manifest = write(media, name, content)
    balance = fake.balance()
    result = await cli("bulk", str(manifest), *("--report", str(media / "r.json")))
    assert result.code == 2
    lines = result.err.splitlines()
    for line, field, fragment in expected:
        prefix = f"{manifest}:{line}:"
        hits = [x for x in lines if x.startswith(prefix) and fragment in x
                and (field is None or f" {field}: " in x)]
        assert hits, f"no '{prefix} ... {field}: {fragment}' in:\n{result.err}"
    assert "nothing was sent" in lines[-1]
    assert result.out == ""
    assert api_requests(fake) == 0
    assert fake.balance() == balance
    assert not (media / "r.json").exists()


async def test_every_problem_is_listed_at_once_and_as_json(cli: Run, fake: FakeViggle,
                                                           media: Path) -> None:
    manifest = write(media, "m.csv", HEAD + "c1,,,,nope.png,d2.mp4,,,maybe,o.mp4\n"
                                            "c2,,,,me.png,d2.mp4,@ghost,,,o2.mp4\n"
                                            ",,,,me.png,d2.mp4,,,,o3.mp4\n")
    result = await cli("bulk", str(manifest), "--json")
    assert result.code == 2
    objs = result.json_lines()
    problems = [(o["line"], o["row"], o["field"]) for o in objs if o["event"] == "problem"]
    # One pass: a row's type errors do not hide its files' problems, nor the combination
    # its other fields make (c2 names a character without a scene).
    assert problems == [(2, 1, "fast"), (2, 1, "ref_image"), (3, 2, "character_id"),
                        (3, 2, "scene_id"), (4, 3, "key")]
    assert all(o["fix"] for o in objs if o["event"] == "problem")
    assert objs[-1] == {"event": "summary", "problems": len(problems), "exit_code": 2}
    assert api_requests(fake) == 0


async def test_a_manifest_that_cannot_be_read_exits_2(cli: Run, tmp_path: Path) -> None:
    result = await cli("bulk", str(tmp_path / "missing.csv"))
    assert result.code == 2
    assert "cannot read the manifest" in result.err


# --- parsing (pure) ----------------------------------------------------------------------

def test_references_resolve_by_key_or_at_key_and_other_values_are_real_ids() -> None:
    text = "\n".join([
        '{"key": "alice", "kind": "character", "name": "Alice", "image": "a.png"}',
        '{"key": "duo", "kind": "scene", "template_id": "tmpl-duo-dance"}',
        '{"key": "r1", "character_id": "alice", "scene_id": "scene_real_1"}',
        '{"key": "r2", "character_id": "char_real_9", "scene_id": "@duo"}',
        '{"key": "r3", "scene_id": "duo", "character_mapping": '
        '{"p1": "alice", "p2": "char_real_9"}, "estimated_seconds": 8}',
    ])
    manifest = parse_manifest(text, fmt="jsonl", base_dir=Path("/data/job"))
    assert manifest.ok, manifest.problems
    rows = {r.key: r for r in manifest.rows}
    assert rows["alice"].inputs == {"name": "Alice", "image": Path("/data/job/a.png")}
    assert (rows["r1"].character, rows["r1"].scene) == ("alice", None)
    assert rows["r1"].inputs == {"scene_id": "scene_real_1"}
    assert (rows["r2"].character, rows["r2"].scene) == (None, "duo")
    assert rows["r2"].inputs == {"character_id": "char_real_9"}
    assert rows["r3"].scene == "duo" and rows["r3"].mapping_refs == {"p1": "alice"}
    assert rows["r3"].estimated_seconds == 8.0
    assert rows["r3"].depends_on == ("duo", "alice")


def test_csv_values_are_typed_and_relative_paths_resolve_against_the_manifest() -> None:
    text = ("key, ref_image ,driving_video,fast,bg_color,background_mode,output\n"
            "\n"
            'c1,img/me.png,/abs/d.mp4,Yes,"0,0,255",solid,out/c1.mp4\n'
            "c2,me.png,d.mp4,0,,,\n")
    manifest = parse_manifest(text, fmt="csv", base_dir=Path("/m"))
    assert manifest.ok, manifest.problems
    c1, c2 = manifest.rows
    assert (c1.line, c1.row, c2.line, c2.row) == (3, 1, 4, 2)
    assert c1.inputs == {"ref_image": Path("/m/img/me.png"), "driving_video": Path("/abs/d.mp4"),
                         "fast": True, "bg_color": "0,0,255", "background_mode": "solid"}
    assert c1.output == Path("/m/out/c1.mp4")
    assert c2.inputs["fast"] is False and c2.output is None


def test_an_empty_manifest_is_a_problem() -> None:
    manifest = parse_manifest("key,ref_image\n", fmt="csv", base_dir=Path("/m"))
    assert [p.problem for p in manifest.problems] == ["has no rows"]


async def test_one_pass_runs_every_check_on_every_row(cli: Run, fake: FakeViggle,
                                                     media: Path) -> None:
    # Each row has a problem the manifest finds (type, column, duplicate key) AND problems
    # only the file and field checks find; a dry run must list all of them at once.
    write_mp4(media / "long.mp4", 360.0)
    (media / "bad.png").write_bytes(b"not an image at all")
    lines = [
        {"key": "a", "ref_image": "nope.png", "driving_video": "d2.mp4", "fast": "maybe"},
        {"key": "b", "ref_image": "me.png", "driving_video": "long.mp4", "colour": "red"},
        {"key": "a", "ref_image": "bad.png", "driving_video": "d1.mp4",
         "background_mode": "solid", "bg_color": "0,0,300"},
        {"key": "c", "kind": "character", "name": 7, "image": "bad.png"},
        {"key": "c", "kind": "scene", "name": "S", "video": "long.mp4"},
        {"ref_image": "me.png", "driving_video": "missing.mp4"},
    ]
    manifest = write(media, "m.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    result = await cli("bulk", str(manifest), "--dry-run", "--json")
    assert result.code == 2
    found = {(o["line"], o["field"]) for o in result.json_lines() if o["event"] == "problem"}
    assert found == {
        (1, "fast"), (1, "ref_image"),                 # bad boolean + missing file
        (2, "colour"), (2, "driving_video"),           # unknown column + a 6-minute video
        (3, "key"), (3, "ref_image"), (3, "bg_color"),  # duplicate key + unreadable image
        (4, "name"), (4, "image"),                     # wrong type + not an image
        (5, "key"), (5, "video"),                      # duplicate key + too long
        (6, "key"), (6, "driving_video"),              # no key + missing file
    }
    assert api_requests(fake) == 0
