"""Every ```python block in README.md runs against the fake server and passes ``mypy --strict``.

The convention: each ```python block is preceded by an HTML comment (invisible on GitHub) that
says how to run it. A block without one fails ``test_every_python_block_is_marked``.

``<!-- snippet: script -->``
    A complete program. It runs as ``python snippet.py`` in a scratch folder that holds the
    sample files in ``SAMPLE_FILES`` (``character.png``, ``dance.mp4``, ...), with
    ``VIGGLE_API_KEY`` and ``VIGGLE_BASE_URL`` pointing at a fresh ``FakeViggle``, so
    ``ViggleClient()`` works unchanged. It must exit 0.
``<!-- snippet: fragment(NAME: TYPE, ...) -->``
    Statements that await at top level (as in a notebook or ``python -m asyncio``). They become
    the body of ``async def snippet(NAME: TYPE, ...) -> None`` and run like a script; the
    test supplies each NAME from ``GIVEN`` (e.g. ``scene_ids``: ids of ready scenes on the fake).
``<!-- snippet: pytest -->``
    A test module. It runs with ``python -m pytest`` in a scratch folder whose pytest config is
    the default one plus ``filterwarnings = error`` (so it must not rely on ``asyncio_mode =
    auto``).
``<!-- snippet: skip REASON -->``
    Not run, not type-checked (say why).

``mypy --strict`` runs once over every extracted snippet and every file in ``examples/``;
each file then has its own test, so a failure names the snippet or example.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from viggle_async import ViggleClient
from viggle_async.testing import FakeViggle, make_png, write_mp4

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"

_MARKER = re.compile(r"<!--\s*snippet:\s*(?P<kind>script|fragment|pytest|skip)\b"
                     r"(?:\((?P<params>[^)]*)\))?(?P<rest>[^>]*?)\s*-->")
_BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```$", re.S | re.M)
_HEADING = re.compile(r"^#{2,4} (?P<title>.+)$", re.M)

#: Files every run's scratch folder holds: the names the README's snippets use.
SAMPLE_FILES: dict[str, Callable[[Path], object]] = {
    "character.png": lambda p: p.write_bytes(make_png(64, 64)),
    "alice.png": lambda p: p.write_bytes(make_png(64, 64, (40, 80, 200))),
    "bob.png": lambda p: p.write_bytes(make_png(64, 64, (40, 200, 80))),
    "dance.mp4": lambda p: write_mp4(p, 4.0),
    "studio.mp4": lambda p: write_mp4(p, 3.0),
}


async def _ready_scenes(client: ViggleClient, scratch: Path) -> list[str]:
    ids = []
    for i, seconds in enumerate((2.0, 3.0, 4.0)):
        video = scratch / f"scene-{i}.mp4"
        write_mp4(video, seconds)
        scene = await client.scenes.create(name=f"scene {i}", video=video)
        ids.append((await client.scenes.wait(scene.id, poll_interval=0.02)).id)
    return ids


async def _transparent_render(client: ViggleClient, folder: Path) -> str:
    job = await client.renders.create(ref_image=folder / "character.png",
                                      driving_video=folder / "dance.mp4",
                                      background_mode="transparent")
    await client.renders.wait(job.job_id, poll_interval=0.05, timeout=30)
    return job.job_id


#: What a fragment's parameters are given, made on the same fake server the snippet uses.
GIVEN: dict[str, Callable[[ViggleClient, Path], Awaitable[object]]] = {
    "scene_ids": _ready_scenes,
    "job_id": _transparent_render,
}

#: Files a snippet's run must leave in its scratch folder (relative paths).
EXPECTED_OUTPUTS: dict[str, list[str]] = {
    "a-tour-of-the-client": ["out.mp4", "mask.mp4"],
    "downloads": ["out.mp4", "mask.mp4", "copy.mp4"],
    "bulk-rendering-with-the-supervisor": ["out/clip-0.mp4", "out/clip-1.mp4", "out/clip-2.mp4"],
}

#: Snippets that fail today because of the library, not the README; flip when it is fixed.
KNOWN_FAILURES: dict[str, str] = {}

#: Snippets that fail ``mypy --strict`` today; the README text needs the fix named here.
KNOWN_TYPE_ERRORS: dict[str, str] = {}


@dataclass(frozen=True)
class Snippet:
    id: str
    kind: str
    params: str
    code: str
    line: int

    @property
    def module(self) -> str:
        return "readme_" + self.id.replace("-", "_")

    def source(self) -> str:
        """The file that runs and is type-checked."""
        header = f"# README.md line {self.line} ({self.kind}), written by tests/test_readme.py\n"
        if self.kind != "fragment":
            return header + self.code
        body = "".join(f"    {line}" if line.strip() else line
                       for line in self.code.splitlines(keepends=True))
        return (f"{header}import asyncio\nimport json\nimport sys\n\n\n"
                f"async def snippet({self.params}) -> None:\n{body}\n\n"
                "if __name__ == '__main__':\n"
                "    asyncio.run(snippet(**json.loads(sys.argv[1])))\n")

    def given_names(self) -> list[str]:
        return [p.split(":")[0].strip() for p in self.params.split(",") if p.strip()]


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def extract(text: str) -> tuple[list[Snippet], list[int]]:
    """The marked snippets, and the line numbers of ```python blocks without a marker."""
    snippets: list[Snippet] = []
    unmarked: list[int] = []
    seen: dict[str, int] = {}
    for block in _BLOCK.finditer(text):
        line = text.count("\n", 0, block.start()) + 1
        before = text[:block.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.fullmatch(before.strip())
        if marker is None:
            unmarked.append(line)
            continue
        headings = list(_HEADING.finditer(text, 0, block.start()))
        sid = _slug(headings[-1]["title"]) if headings else "top"
        seen[sid] = seen.get(sid, 0) + 1
        if seen[sid] > 1:
            sid = f"{sid}-{seen[sid]}"
        snippets.append(Snippet(sid, marker["kind"], marker["params"] or "", block["code"], line))
    return snippets, unmarked


SNIPPETS, UNMARKED = extract(README.read_text(encoding="utf-8"))
RUNNABLE = [s for s in SNIPPETS if s.kind != "skip"]
EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.py"))


def _cases(kinds: tuple[str, ...], known: dict[str, str]) -> list[object]:
    return [pytest.param(s, id=s.id, marks=[pytest.mark.xfail(reason=known[s.id], strict=True)]
                         if s.id in known else [])
            for s in RUNNABLE if s.kind in kinds]


def test_every_python_block_is_marked() -> None:
    assert UNMARKED == [], (
        f"README.md: ```python blocks at lines {UNMARKED} have no '<!-- snippet: ... -->' "
        "marker on the line before; see tests/test_readme.py for the kinds")
    assert {s.kind for s in SNIPPETS} >= {"script", "fragment", "pytest"}
    assert len({s.id for s in SNIPPETS}) == len(SNIPPETS)


def test_the_convention_finds_markers_fragments_and_unmarked_blocks() -> None:
    text = ("## One\n<!-- snippet: fragment(xs: list[str], n: int) -->\n```python\n"
            "for x in xs:\n    await f(x)\n```\n\n## Two\n```python\nprint()\n```\n")
    (snippet,), unmarked = extract(text)
    assert unmarked == [9]
    assert (snippet.id, snippet.kind, snippet.given_names()) == ("one", "fragment", ["xs", "n"])
    source = snippet.source()
    compile(source, "fragment", "exec")  # top-level await became a function body
    assert "async def snippet(xs: list[str], n: int) -> None:\n    for x in xs:\n" \
        "        await f(x)\n" in source


async def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    # The fake server runs in this event loop, so the child must not block it.
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.parametrize("snippet", _cases(("script", "fragment"), KNOWN_FAILURES))
async def test_snippet_runs_against_the_fake_server(snippet: Snippet, tmp_path: Path) -> None:
    for name, make in SAMPLE_FILES.items():
        make(tmp_path / name)
    script = tmp_path / f"{snippet.module}.py"
    script.write_text(snippet.source(), encoding="utf-8")
    async with FakeViggle(time_scale=200.0) as fake:
        argv = [sys.executable, str(script)]
        if snippet.kind == "fragment":
            async with ViggleClient(fake.api_key, base_url=fake.base_url) as client:
                given = {name: await GIVEN[name](client, tmp_path)
                         for name in snippet.given_names()}
            argv.append(json.dumps(given))
        env = {**os.environ, "VIGGLE_API_KEY": fake.api_key, "VIGGLE_BASE_URL": fake.base_url,
               "PYTHONDONTWRITEBYTECODE": "1"}
        code, out = await _run(argv, tmp_path, env, timeout=90)
    assert code == 0, out
    assert fake.api_key not in out
    for rel in EXPECTED_OUTPUTS.get(snippet.id, []):
        assert (tmp_path / rel).is_file(), f"{rel} missing\n{out}"
        assert (tmp_path / rel).stat().st_size > 0


@pytest.mark.parametrize("snippet", _cases(("pytest",), KNOWN_FAILURES))
def test_test_snippet_passes_under_default_pytest_config(snippet: Snippet, tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n")
    (tmp_path / f"test_{snippet.module}.py").write_text(snippet.source(), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b1 passed\b", proc.stdout), proc.stdout


@dataclass(frozen=True)
class MypyRun:
    folder: Path  # where the snippets were written
    errors: dict[Path, list[str]]  # every checked file -> its error lines

    def of_snippet(self, snippet: Snippet) -> list[str]:
        return self.errors[(self.folder / f"{snippet.module}.py").resolve()]


@pytest.fixture(scope="module")
def mypy_run(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> MypyRun:
    """One ``mypy --strict`` run over every snippet and example (one run keeps it fast)."""
    # A folder that stays put between runs (pytest's cache), so mypy's own cache beside it
    # stays valid: a cold run takes ~20 s, a warm one a few. mypy caches by module name, so
    # the snippets must not move while the cache lives.
    cache = getattr(pytestconfig, "cache", None)
    folder = (cache.mkdir("readme-snippets") if cache is not None
              else tmp_path_factory.mktemp("readme-snippets"))
    for stale in folder.glob("*.py"):
        stale.unlink()
    files = []
    for snippet in RUNNABLE:
        path = folder / f"{snippet.module}.py"
        path.write_text(snippet.source(), encoding="utf-8")
        files.append(path)
    files += EXAMPLE_FILES
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--show-absolute-path", "--no-error-summary",
         "--python-version", "3.11", "--cache-dir", str(folder / ".mypy_cache"),
         *map(str, files)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 2: mypy itself failed
    errors: dict[Path, list[str]] = {path.resolve(): [] for path in files}
    for line in proc.stdout.splitlines():
        path = Path(line.split(":", 1)[0]).resolve()
        if path in errors:
            errors[path].append(line)
        elif ": error:" in line:  # an error in a module they import: no test would show it
            raise AssertionError(proc.stdout)
    return MypyRun(folder.resolve(), errors)


@pytest.mark.parametrize("snippet", _cases(("script", "fragment", "pytest"), KNOWN_TYPE_ERRORS))
def test_snippet_passes_mypy_strict(snippet: Snippet, mypy_run: MypyRun) -> None:
    assert mypy_run.of_snippet(snippet) == []


@pytest.mark.parametrize("example", EXAMPLE_FILES,
                         ids=[str(p.relative_to(EXAMPLES)) for p in EXAMPLE_FILES])
def test_example_passes_mypy_strict(example: Path, mypy_run: MypyRun) -> None:
    assert mypy_run.errors[example.resolve()] == []


# --- docs/api: the project's own API notes, and the citations that point into them ----------

DOCS = ROOT / "docs"
CITATIONS = DOCS / "citations.tsv"
CITED_TREES = ("viggle_async", "tests", "benchmarks", "examples")


def _cited_files() -> list[Path]:
    """Python files whose comments cite the notes (this file's own examples excluded)."""
    return [path for tree in CITED_TREES for path in sorted((ROOT / tree).rglob("*.py"))
            if path != Path(__file__).resolve()]
_ANCHOR = re.compile(r'<a id="([\w-]+)"></a>')
_DOC_REF = re.compile(r"docs/api/(?:[\w-]+\.md)?(?:#[\w-]+)?")
_MD_LINK = re.compile(r"\]\(([\w./-]*\.md)?(#[\w-]+)?\)")
_SECTION = re.compile(r"§[0-9]+(?:\.[0-9]+)*(?:[–-]§?[0-9]+(?:\.[0-9]+)*)?")


def _anchors(path: Path) -> set[str]:
    return set(_ANCHOR.findall(path.read_text(encoding="utf-8")))


def _resolves(target: str, base: Path) -> bool:
    """``file.md#anchor``, ``file.md`` or ``#anchor`` relative to ``base`` (a file or folder)."""
    file, _, anchor = target.partition("#")
    path = (base.parent if base.is_file() else base) / file if file else base
    if not path.exists():
        return False
    if path.is_dir():
        return not anchor
    return not anchor or anchor in _anchors(path)


def test_every_link_in_the_docs_resolves() -> None:
    broken = []
    for page in sorted(DOCS.rglob("*.md")):
        for match in _MD_LINK.finditer(page.read_text(encoding="utf-8")):
            target = (match[1] or "") + (match[2] or "")
            if not _resolves(target, page):
                broken.append(f"{page.relative_to(DOCS)}: {target}")
    assert broken == []


def test_every_docs_api_reference_in_the_code_resolves() -> None:
    # Comments cite "docs/api/FILE.md#anchor"; an anchor renamed in the notes breaks them.
    broken = []
    for path in _cited_files():
        for ref in _DOC_REF.findall(path.read_text(encoding="utf-8")):
            if not _resolves(ref.removeprefix("docs/api/") or ".", DOCS / "api"):
                broken.append(f"{path.relative_to(ROOT)}: {ref}")
    assert broken == []


@dataclass(frozen=True)
class CitationRow:
    old: str
    new: str
    file: str
    line_contains: str


def _citation_rows() -> list[CitationRow]:
    lines = [line for line in CITATIONS.read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    assert lines[0].split("\t") == ["old", "new", "file", "line_contains", "note"]
    return [CitationRow(*line.split("\t")[:4]) for line in lines[1:]]


def resolve_citation(rows: list[CitationRow], old: str, file: str, line: str) -> list[str]:
    """The new references for one occurrence: the most specific matching rows."""
    def rank(row: CitationRow) -> int | None:
        if row.old != old or (row.file and row.file != file):
            return None
        if row.line_contains and row.line_contains.lower() not in line.lower():
            return None
        return 2 * bool(row.line_contains) + bool(row.file)

    ranked = [(r, row) for row in rows if (r := rank(row)) is not None]
    best = max((r for r, _ in ranked), default=None)
    return sorted({row.new for r, row in ranked if r == best})


def test_every_old_section_citation_has_exactly_one_new_reference() -> None:
    rows = _citation_rows()
    for row in rows:
        if row.new not in ("(keep)", "docs/api") and row.new.startswith("docs/api/"):
            for ref in row.new.split(", "):
                assert _resolves(ref.removeprefix("docs/api/"), DOCS / "api"), row
    problems = []
    for path in _cited_files():
        rel = str(path.relative_to(ROOT))
        for line in path.read_text(encoding="utf-8").splitlines():
            for old in _SECTION.findall(line):
                new = resolve_citation(rows, old, rel, line)
                if len(new) != 1:
                    problems.append(f"{rel}: {old} -> {new or 'no row'}: {line.strip()}")
    assert problems == []


def test_citation_rows_pick_the_most_specific_match() -> None:
    rows = _citation_rows()
    assert resolve_citation(rows, "§2.12", "x.py", "# list scenes (§2.12)") == [
        "docs/api/assets.md#list-scenes"]
    assert resolve_citation(rows, "§2.12", "x.py", "Get Scene does not return them (§2.12)") == [
        "docs/api/assets.md#get-scene"]
    assert resolve_citation(rows, "§10.2.3", "viggle_async/_backoff.py", "RFC 9110 §10.2.3") == [
        "(keep)"]
    assert resolve_citation(rows, "§3.9", "x.py", "§3.9") == []


# --- the architecture table as a contract (.importlinter, checked by import-linter) ---------

#: Contracts that fail on today's code for a known reason; flip them when it is fixed.
KNOWN_BROKEN_CONTRACTS: dict[str, str] = {}


def _contract_ids() -> list[str]:
    text = (ROOT / ".importlinter").read_text(encoding="utf-8")
    return re.findall(r"^\[importlinter:contract:([\w-]+)\]$", text, re.M)


@pytest.mark.parametrize("contract", [
    pytest.param(c, marks=[pytest.mark.xfail(reason=KNOWN_BROKEN_CONTRACTS[c], strict=True)]
                 if c in KNOWN_BROKEN_CONTRACTS else [])
    for c in _contract_ids()])
def test_import_contract_is_kept(contract: str) -> None:
    # `lint-imports` from the repository root checks them all; one contract per test here so
    # a broken one is named.
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--no-cache", "--no-logo", "--contract", contract],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_the_contracts_cover_the_layers_the_readme_promises() -> None:
    assert set(_contract_ids()) >= {"layers", "testing-independent",
                                    "only-transport-imports-aiohttp", "pure-core"}
