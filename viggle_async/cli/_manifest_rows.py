"""Manifest rows: the columns, the CSV / JSON-lines record readers, and one row's parser
(types and per-row rules). Pure; ``_manifest`` adds the checks across rows."""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

__all__ = ["COLUMNS", "KINDS", "REF_KIND", "Problem", "Row", "RowParser", "csv_records",
           "jsonl_records"]

Kind = Literal["render", "character", "scene"]
KINDS: tuple[Kind, ...] = ("render", "character", "scene")

# Column -> (kinds it belongs to, value type). The API's names, so a manifest reads like
# the request it becomes.
_R, _C, _S = frozenset({"render"}), frozenset({"character"}), frozenset({"scene"})
COLUMNS: dict[str, tuple[frozenset[str], str]] = {
    "ref_image": (_R, "path"),
    "ref_image_url": (_R, "str"),
    "driving_video": (_R, "path"),
    "driving_video_url": (_R, "str"),
    "character_id": (_R, "ref"),
    "scene_id": (_R, "ref"),
    "character_mapping": (_R, "mapping"),
    "model": (_R | _S, "str"),
    "background_mode": (_R | _S, "str"),
    "bg_color": (_R, "color"),
    "fast": (_R, "bool"),
    "output": (_R, "path"),
    "mask_output": (_R, "path"),
    "estimated_seconds": (_R, "float"),
    "name": (_C | _S, "str"),
    "image": (_C, "path"),
    "image_url": (_C, "str"),
    "video": (_S, "path"),
    "video_url": (_S, "str"),
    "template_id": (_S, "str"),
}
_ALL_COLUMNS = ("key", "kind", *COLUMNS)
_NOT_INPUTS = frozenset({"output", "mask_output", "estimated_seconds"})
_TRUE = frozenset({"true", "yes", "1", "y", "on"})
_FALSE = frozenset({"false", "no", "0", "n", "off"})
# The asset kind each reference column must point at.
REF_KIND = {"character_id": "character", "scene_id": "scene",
             "character_mapping": "character"}


@attrs.frozen
class Problem:
    """One thing wrong with the manifest. ``line`` is the file line (0: the whole file);
    ``row`` the record number (None for the header or the file)."""

    line: int
    row: int | None
    field: str | None
    problem: str
    fix: str
    key: str | None = None

    def describe(self, name: str) -> str:
        where = f"{name}:{self.line}:" if self.line else f"{name}:"
        if self.row is not None:
            where += f" row {self.row}"
            if self.key is not None:
                where += f" (key {self.key!r})"
            where += ","
        elif self.line:
            where += " header,"
        field = f" {self.field}:" if self.field else ""
        return f"{where}{field} {self.problem}. Fix: {self.fix}"


@attrs.frozen
class Row:
    """One valid row. ``inputs`` are keyword arguments for the supervisor call (files as
    absolute Paths); ``character`` / ``scene`` are keys of the rows a render depends on."""

    line: int
    row: int
    key: str
    kind: Kind
    inputs: Mapping[str, Any]
    output: Path | None = None
    mask_output: Path | None = None
    estimated_seconds: float | None = None
    character: str | None = None
    scene: str | None = None
    #: segment uuid -> key of the character row whose id goes in ``character_mapping``.
    mapping_refs: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def depends_on(self) -> tuple[str, ...]:
        keys = [k for k in (self.character, self.scene) if k is not None]
        return (*keys, *self.mapping_refs.values())


# --- records -------------------------------------------------------------------------

Record = tuple[int, int, dict[str, Any]]  # (line, row, raw values)


def _unknown_column(name: str) -> tuple[str, str]:
    close = difflib.get_close_matches(name, _ALL_COLUMNS, n=1)
    fix = f"did you mean {close[0]!r}?" if close else "use one of: " + ", ".join(_ALL_COLUMNS)
    return f"unknown column {name!r}", fix


def csv_records(text: str, problems: list[Problem]) -> Iterator[Record]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    start, row_no = 1, 0
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue  # blank lines are allowed anywhere
            if header is None:
                header = [c.strip() for c in cells]
                for i, name in enumerate(header):
                    if not name:
                        problems.append(Problem(line, None, f"column {i + 1}", "has no name",
                                                "name every column, or delete the empty one"))
                    elif header.index(name) != i:
                        problems.append(Problem(line, None, name, "appears twice",
                                                "keep one column of each name"))
                    elif name not in _ALL_COLUMNS:
                        problems.append(Problem(line, None, name, *_unknown_column(name)))
                continue
            row_no += 1
            if len(cells) > len(header):
                problems.append(Problem(line, row_no, None,
                                        f"has {len(cells)} cells but the header has "
                                        f"{len(header)}",
                                        "quote values that contain commas, e.g. \"0,255,0\""))
                continue
            values = {name: cell.strip() for name, cell in zip(header, cells, strict=False)
                      if name in _ALL_COLUMNS and cell.strip()}
            yield line, row_no, values
    except csv.Error as exc:
        problems.append(Problem(start, None, None, f"is not valid CSV ({exc})",
                                "check the quoting on this line"))


def jsonl_records(text: str, problems: list[Problem]) -> Iterator[Record]:
    row_no = 0
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        row_no += 1
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            problems.append(Problem(line, row_no, None, f"is not valid JSON ({exc})",
                                    "write one JSON object per line"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(line, row_no, None,
                                    f"is a JSON {type(obj).__name__}, not an object",
                                    "write one JSON object per line"))
            continue
        key = obj.get("key") if isinstance(obj.get("key"), str) else None
        for name in obj:
            if name not in _ALL_COLUMNS:
                problems.append(Problem(line, row_no, name, *_unknown_column(name), key=key))
        yield line, row_no, {k: v for k, v in obj.items() if k in _ALL_COLUMNS and v is not None}


# --- one row -------------------------------------------------------------------------

class _Bad(Exception):
    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix


def _type_name(value: object) -> str:
    return {bool: "boolean", int: "number", float: "number", list: "list",
            dict: "object"}.get(type(value), type(value).__name__)


class RowParser:
    def __init__(self, base_dir: Path, problems: list[Problem]):
        self.base_dir = base_dir
        self.problems = problems
        self.bad_keys: set[str] = set()  # rows with problems, so references to them are known
        #: Rows with problems of their own, holding the values that did convert: never run,
        #: but still given the library's checks, so every problem is listed in one pass.
        self.held: list[Row] = []

    def parse(self, line: int, row: int, raw: dict[str, Any]) -> Row | None:
        before = len(self.problems)
        key = self._key(line, row, raw.get("key"))

        def bad(field: str | None, problem: str, fix: str) -> None:
            self.problems.append(Problem(line, row, field, problem, fix, key=key))

        kind_raw = raw.get("kind", "render")
        kind: Kind = "render"
        if kind_raw in KINDS:
            kind = kind_raw
        else:
            bad("kind", f"{kind_raw!r} is not a kind", "use render, character or scene")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name in ("key", "kind"):
                continue
            kinds, vtype = COLUMNS[name]
            if kind_raw in KINDS and kind not in kinds:
                bad(name, f"does not apply to a {kind} row",
                    f"leave it empty, or set kind to {' or '.join(sorted(kinds))}")
                continue
            try:
                values[name] = self._convert(vtype, value)
            except _Bad as exc:
                bad(name, exc.problem, exc.fix)
        self._check_kind(kind, values, bad)
        if len(self.problems) > before:
            if key is not None:
                self.bad_keys.add(key)
            if kind_raw in KINDS:  # keyless rows too: "" stands for the missing key
                self.held.append(self._row(line, row, key or "", kind, values))
            return None
        assert key is not None
        return self._row(line, row, key, kind, values)

    def _key(self, line: int, row: int, value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # tolerant: a JSON number is a fine key
        if isinstance(value, str) and value.strip():
            return value.strip()
        problem = "is missing" if value is None else f"must be a non-empty string, got {value!r}"
        self.problems.append(Problem(line, row, "key", problem,
                                     "give every row a unique key, e.g. clip-001"))
        return None

    def _convert(self, vtype: str, value: Any) -> Any:
        if vtype == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise _Bad(f"{value!r} is not a boolean", "write true or false")
        if vtype == "float":
            try:
                number = float(value) if not isinstance(value, bool) else math.nan
            except (TypeError, ValueError):
                number = math.nan
            if not (math.isfinite(number) and number > 0):
                raise _Bad(f"{value!r} is not a positive number of seconds",
                           "write the video length in seconds, e.g. 12.5")
            return number
        if vtype == "color":
            if isinstance(value, str) or (isinstance(value, list)
                                          and all(isinstance(v, int) for v in value)):
                return value  # the library checks the components
            raise _Bad(f"must be 'R,G,B' or a list of 3 integers, got {_type_name(value)}",
                       "write e.g. \"0,255,0\"")
        if vtype == "mapping":
            return self._mapping(value)
        if not isinstance(value, str):
            raise _Bad(f"must be a string, got {_type_name(value)}",
                       "quote the value in the JSON line")
        if vtype == "path":
            return self.base_dir / Path(value).expanduser()
        return value

    @staticmethod
    def _mapping(value: Any) -> dict[str, str]:
        fix = 'write a JSON object of segment uuid -> character id, e.g. {"person_a1": "char_x"}'
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise _Bad("is not valid JSON", fix) from None
        if not (isinstance(value, dict) and value and all(
                isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items())):
            raise _Bad("must be a non-empty object of strings", fix)
        return value

    @staticmethod
    def _check_kind(kind: Kind, values: dict[str, Any],
                    bad: Callable[[str | None, str, str], None]) -> None:
        """Structural rules only; the library checks the rest (formats, combinations)."""
        if kind == "render":
            if "mask_output" in values and values.get("background_mode") != "transparent":
                bad("mask_output", "only transparent renders have a mask",
                    "set background_mode to transparent, or leave mask_output empty")
        elif kind == "character":
            if "name" not in values:
                bad("name", "is required for a character", "give the character a name")
        elif "template_id" in values:
            for name in ("video", "video_url", "background_mode", "model"):
                if name in values:
                    bad(name, "cannot be combined with template_id",
                        "a template scene takes only template_id and name")
        elif "name" not in values:
            bad("name", "is required for a scene made from a video", "give the scene a name")

    @staticmethod
    def _row(line: int, row: int, key: str, kind: Kind, values: dict[str, Any]) -> Row:
        inputs = {k: v for k, v in values.items() if k not in _NOT_INPUTS}
        return Row(line, row, key, kind, inputs, output=values.get("output"),
                   mask_output=values.get("mask_output"),
                   estimated_seconds=values.get("estimated_seconds"))


