"""Bulk manifests: a CSV or JSON-lines file, one row of work per record.

Columns are the API's field names (docs/api/renders.md#create-render,
docs/api/assets.md#create-character, docs/api/assets.md#create-scene,
docs/api/assets.md#import-template) plus ``key``
(unique, required), ``kind`` (``render``, the default, | ``character`` | ``scene``),
``output``, ``mask_output`` and ``estimated_seconds``. Relative paths resolve against the
manifest's folder. In a render row, ``character_id`` / ``scene_id`` naming the key of a
character / scene row of the same manifest (or ``@key``, which must name one) is a
reference to the asset that row creates; any other value is a real id. The same rule holds
for the character ids in a ``character_mapping``.

Pure: reads the manifest file and nothing else (input files are checked later, by the
library's own preflight). Every problem is collected, with its line, row, field and fix,
so a user fixes the whole file in one go.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import attrs

from ._manifest_rows import (
    COLUMNS,
    REF_KIND,
    Problem,
    Row,
    RowParser,
    csv_records,
    jsonl_records,
)

__all__ = ["COLUMNS", "Manifest", "Problem", "Row", "load_manifest", "parse_manifest"]


@attrs.frozen
class Manifest:
    """The rows that parsed cleanly and every problem found (valid only if none).

    ``held``: rows with problems of their own (bad values, a duplicate key, a broken
    reference), keeping the values that did parse. They never run, but the per-row checks
    (files, formats, combinations) still look at them, so one pass lists every problem.
    """

    path: Path
    rows: tuple[Row, ...]
    problems: tuple[Problem, ...]
    held: tuple[Row, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def load_manifest(path: Path) -> Manifest:
    """Read and parse ``path``: ``.csv`` is CSV, ``.jsonl``/``.ndjson``/``.json`` JSON lines;
    any other name is sniffed (a first ``{`` means JSON lines)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = Problem(0, None, None, f"cannot read the manifest ({reason})",
                          "pass the path of a UTF-8 CSV or JSON-lines file")
        return Manifest(path, (), (problem,))
    suffix = path.suffix.lower()
    fmt: Literal["csv", "jsonl"]
    if suffix == ".csv":
        fmt = "csv"
    elif suffix in (".jsonl", ".ndjson", ".json"):
        fmt = "jsonl"
    else:
        fmt = "jsonl" if text.lstrip().startswith("{") else "csv"
    return parse_manifest(text, fmt=fmt, base_dir=path.resolve().parent, path=path)


def parse_manifest(text: str, *, fmt: Literal["csv", "jsonl"], base_dir: Path,
                   path: Path = Path("manifest")) -> Manifest:
    """Parse manifest text; relative paths resolve against ``base_dir``."""
    problems: list[Problem] = []
    records = csv_records(text, problems) if fmt == "csv" else jsonl_records(text, problems)
    parser = RowParser(base_dir, problems)
    rows = [row for row in (parser.parse(*rec) for rec in records) if row is not None]
    if not rows and not problems:
        problems.append(Problem(0, None, None, "has no rows",
                                "add one row per render, character or scene"))
    rows = _drop_duplicates(rows, parser.held, problems)
    good = _check_keys_and_refs(rows, parser.bad_keys, problems)
    running = {row.line for row in good}
    held = [*parser.held, *(row for row in rows if row.line not in running)]
    held.sort(key=lambda r: r.line)
    problems.sort(key=lambda p: (p.line, p.field or ""))
    return Manifest(path, tuple(good), tuple(problems), tuple(held))


# --- keys and references -----------------------------------------------------------------

def _drop_duplicates(rows: list[Row], held: list[Row], problems: list[Problem]) -> list[Row]:
    """Report every key used twice, counting rows held for problems of their own (a bad
    first row must not hide that a later one reuses its key); later rows are held."""
    first: dict[str, Row] = {}
    keep = []
    for row in sorted([*rows, *held], key=lambda r: r.line):
        if not row.key:
            continue  # no key: already reported
        if row.key in first:
            problems.append(Problem(row.line, row.row, "key",
                                    f"{row.key!r} is already used on line "
                                    f"{first[row.key].line}",
                                    "give every row a unique key", key=row.key))
            if any(row is r for r in rows):
                held.append(row)
            continue
        first[row.key] = row
        if any(row is r for r in rows):
            keep.append(row)
    return keep


def _check_keys_and_refs(rows: list[Row], bad_keys: set[str],
                         problems: list[Problem]) -> list[Row]:
    first: dict[str, Row] = {}
    for row in rows:
        if row.key in first:
            problems.append(Problem(row.line, row.row, "key",
                                    f"{row.key!r} is already used on line "
                                    f"{first[row.key].line}",
                                    "give every row a unique key", key=row.key))
        else:
            first[row.key] = row
    known = set(first) | bad_keys
    _check_outputs(list(first.values()), problems)
    # Edges row -> rows it refers to: {key: {(column, segment or ""): target key}}.
    refs: dict[str, dict[tuple[str, str], str]] = {}
    for row in first.values():
        for column, segment, value in _ref_values(row):
            if value.startswith("@"):
                target = value[1:]
                if target not in known:
                    problems.append(Problem(
                        row.line, row.row, column,
                        f"refers to key {target!r}, which no row of the manifest has",
                        f"add a {REF_KIND[column]} row with key {target!r}, or drop the @ "
                        "to pass a real id", key=row.key))
                    continue
                refs.setdefault(row.key, {})[column, segment] = target
            elif value in known:
                refs.setdefault(row.key, {})[column, segment] = value
    cyclic = _cycles(refs, problems, first)
    broken = {p.key for p in problems if p.key is not None} | cyclic
    out = []
    for row in rows:
        if first.get(row.key) is not row:
            continue
        ok = row.key not in broken
        targets = refs.get(row.key, {})
        for (column, _segment), target in targets.items():
            want = REF_KIND[column]
            target_row = first.get(target)
            if target_row is None:
                ok = False  # that row's own problems are reported; this one waits for them
            elif target_row.kind != want and row.key not in cyclic:
                problems.append(Problem(row.line, row.row, column,
                                        f"key {target!r} is a {target_row.kind} row, not a "
                                        f"{want} row",
                                        f"point {column} at a {want} row's key, or at a "
                                        f"real {want} id", key=row.key))
                ok = False
        if ok:
            out.append(_resolved(row, targets))
    return out


def _ref_values(row: Row) -> Iterator[tuple[str, str, str]]:
    """(column, segment uuid or "", value) of every value that may name another row."""
    for column in ("character_id", "scene_id"):
        value = row.inputs.get(column)
        if isinstance(value, str):
            yield column, "", value
    mapping = row.inputs.get("character_mapping")
    if isinstance(mapping, dict):
        for segment, value in mapping.items():
            yield "character_mapping", segment, value


def _resolved(row: Row, targets: dict[tuple[str, str], str]) -> Row:
    """The row with its references taken out of ``inputs``."""
    inputs = dict(row.inputs)
    character = scene = None
    mapping_refs = {}
    for (column, segment), target in targets.items():
        if column == "character_id":
            character = target
            inputs.pop(column)
        elif column == "scene_id":
            scene = target
            inputs.pop(column)
        else:
            mapping_refs[segment] = target
    return attrs.evolve(row, inputs=inputs, character=character, scene=scene,
                        mapping_refs=mapping_refs)


def _check_outputs(rows: list[Row], problems: list[Problem]) -> None:
    seen: dict[Path, Row] = {}
    for row in rows:
        for column, path in (("output", row.output), ("mask_output", row.mask_output)):
            if path is None:
                continue
            if path in seen:
                problems.append(Problem(row.line, row.row, column,
                                        f"{str(path)!r} is also the output of key "
                                        f"{seen[path].key!r}",
                                        "give every render its own output file", key=row.key))
            else:
                seen[path] = row


def _cycles(refs: dict[str, dict[tuple[str, str], str]], problems: list[Problem],
            rows: dict[str, Row]) -> set[str]:
    """Report each dependency cycle once (at its first row); return the keys in cycles."""
    in_cycle: set[str] = set()
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(key: str, stack: list[str]) -> None:
        state[key] = 1
        stack.append(key)
        for (column, _segment), target in refs.get(key, {}).items():
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target):], target]
                in_cycle.update(cycle)
                row = rows[key]
                problems.append(Problem(row.line, row.row, column,
                                        "dependency cycle: " + " -> ".join(cycle),
                                        "a render may only refer to character and scene rows",
                                        key=key))
            elif state.get(target) is None and target in rows:
                visit(target, stack)
        stack.pop()
        state[key] = 2

    for key in refs:
        if state.get(key) is None:
            visit(key, [])
    return in_cycle
