"""Batch sets, as the legacy app had them: one prompt template expanded over rows of values.

A template such as ``"a {animal} in {place}, oil painting"`` names its variables in braces; each row gives
a value per variable and becomes one prompt. Rows come either as CSV text whose first line is the header
(``TemplateSpec.csv``, the proto's ``template.csv``) or as a list of mappings (``TemplateSpec.rows``, the
proto's ``template.structured``).

Rules, each broken one reported as a ``FieldViolation`` on the proto's field path (all at once):

- The template (``template.template``) is required, at most ``MAX_PROMPT_CHARS`` characters, and parsed
  with ``string.Formatter``: ``{{`` and ``}}`` are literal braces; a placeholder is a bare name (spaces
  around it are ignored); attribute or index access (``{a.b}``, ``{a[0]}``), conversions (``{a!r}``),
  format specs (``{a:>5}``) and empty placeholders (``{}``) are refused.
- A template must use at least one variable. A template without variables would give the same prompt for
  every row, which is almost always a mistake (a typo such as ``[animal]`` or ``{{animal}}``); the same
  images are made with ``parameters.prompt`` and ``image_count``.
- There is at least one row and at most ``MAX_TEMPLATE_ROWS``.
- CSV: parsed by the ``csv`` module in strict mode (quotes allow commas in values; spaces after a comma
  are skipped so ``a, "b, c"`` works; an unterminated quote is an error rather than a value swallowing the
  rest of the text); header names and values are stripped; blank lines, and lines whose cells are all
  blank (``,,,`` from spreadsheets), are skipped; a UTF-8 byte order mark is ignored. The header must not
  have empty or duplicate names; a row must not have more cells than the header. A short row is fine
  unless the template uses one of its missing cells.
- Structured rows: keys and values are stripped; a key must not be empty or repeat after stripping.
- Every variable of the template is a column of the header (CSV) and has a value in every row. Empty
  values are allowed (an optional modifier such as ``{style}`` may be blank). Columns the template does
  not use are allowed.
- No expanded prompt is longer than ``MAX_PROMPT_CHARS``.

Rows are numbered from 1 in messages, in the order they become prompts (blank lines do not count); CSV
messages add the line number, structured ones the index (``rows[2]``). Values are inserted literally:
braces in a value are not expanded again.
"""

from __future__ import annotations

import csv
import io
import string
from collections.abc import Mapping
from dataclasses import dataclass

from imagineer_common.errors import ViolationCollector
from imagineer_generator.plan import TemplateSpec

MAX_TEMPLATE_ROWS = 256
MAX_PROMPT_CHARS = 2000
# Per rows field, at most this many row-level violations are listed, then one line counts the rest.
MAX_ROW_VIOLATIONS = 10

TEMPLATE_FIELD = "template.template"
CSV_FIELD = "template.csv"
STRUCTURED_FIELD = "template.structured"

_EXAMPLE = "for example 'a {animal} in {place}'"


@dataclass(frozen=True)
class ParsedTemplate:
    """A template split into literal text and variables: ``pieces`` alternate (literal, variable or None)."""

    pieces: tuple[tuple[str, str | None], ...]
    variables: tuple[str, ...]  # unique, in order of first use

    def length(self, values: Mapping[str, str]) -> int:
        return sum(len(literal) + (len(values[name]) if name is not None else 0) for literal, name in self.pieces)

    def render(self, values: Mapping[str, str]) -> str:
        return "".join(literal + (values[name] if name is not None else "") for literal, name in self.pieces)


@dataclass
class _Row:
    label: str  # "row 3 (line 4)" or "row 3 (rows[2])"
    values: dict[str, str]


class _RowErrors:
    """Adds row-level violations to one field, listing the first few and counting the rest."""

    def __init__(self, collector: ViolationCollector, field_path: str) -> None:
        self.collector = collector
        self.field_path = field_path
        self.count = 0

    def add(self, description: str) -> None:
        self.count += 1
        if self.count <= MAX_ROW_VIOLATIONS:
            self.collector.add(self.field_path, description)

    def finish(self) -> None:
        if self.count > MAX_ROW_VIOLATIONS:
            self.collector.add(self.field_path, f"... and {self.count - MAX_ROW_VIOLATIONS} more row errors")


def expand_template(spec: TemplateSpec) -> list[str]:
    """The prompts of a batch set, one per row in row order; raises ``InvalidArgument`` listing every problem."""
    collector = ViolationCollector()
    prompts = expand_template_into(spec, collector)
    collector.raise_if_any()
    assert prompts is not None  # no violation means the expansion succeeded
    return prompts


def expand_template_into(spec: TemplateSpec, collector: ViolationCollector) -> list[str] | None:
    """Like ``expand_template`` but adds the violations to ``collector``; returns None when there were any.

    Used by request validation so template problems are reported together with the rest of the request.
    """
    before = len(collector.violations)
    parsed = parse_template(spec.template, collector)
    rows = _read_rows(spec, collector, parsed)
    if parsed is None or rows is None or len(collector.violations) > before:
        return None

    errors = _RowErrors(collector, TEMPLATE_FIELD)
    prompts: list[str] = []
    for row in rows:
        size = parsed.length(row.values)
        if size > MAX_PROMPT_CHARS:
            errors.add(f"{row.label} expands to a prompt of {size} characters; at most {MAX_PROMPT_CHARS}")
        else:
            prompts.append(parsed.render(row.values))
    errors.finish()
    return None if errors.count else prompts


def parse_template(template: str, collector: ViolationCollector) -> ParsedTemplate | None:
    """Splits a template into literals and variables, or adds violations on ``template.template``."""
    if not template.strip():
        collector.add(TEMPLATE_FIELD, f"required: a prompt with {{variables}}, {_EXAMPLE}")
        return None
    if len(template) > MAX_PROMPT_CHARS:
        collector.add(TEMPLATE_FIELD, f"{len(template)} characters; at most {MAX_PROMPT_CHARS}")
        return None
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        collector.add(TEMPLATE_FIELD, f"malformed braces ({exc}); write {{{{ and }}}} for literal braces")
        return None

    pieces: list[tuple[str, str | None]] = []
    variables: list[str] = []
    ok = True
    for literal, field_name, format_spec, conversion in parts:
        if field_name is None:
            pieces.append((literal, None))
            continue
        name = field_name.strip()
        placeholder = _placeholder(field_name, format_spec, conversion)
        if not name:
            collector.add(TEMPLATE_FIELD, f"empty placeholder {placeholder}: put a column name in the braces")
            ok = False
        elif conversion is not None or format_spec or any(c in name for c in ".[]"):
            collector.add(TEMPLATE_FIELD, f"placeholder {placeholder} must be a bare {{name}}: no attribute "
                                          "or index access (. [ ]), conversion (!) or format spec (:)")
            ok = False
        else:
            pieces.append((literal, name))
            if name not in variables:
                variables.append(name)
    if not ok:
        return None
    if not variables:
        collector.add(TEMPLATE_FIELD, f"has no {{variables}} to fill from the rows ({_EXAMPLE}; {{{{ and }}}} "
                                      "are literal braces); for a single prompt use parameters.prompt and "
                                      "image_count")
        return None
    return ParsedTemplate(tuple(pieces), tuple(variables))


def _placeholder(field_name: str, format_spec: str | None, conversion: str | None) -> str:
    text = field_name
    if conversion is not None:
        text += "!" + conversion
    if format_spec:
        text += ":" + format_spec
    return "{" + text + "}"


def _read_rows(spec: TemplateSpec, collector: ViolationCollector,
               parsed: ParsedTemplate | None) -> list[_Row] | None:
    variables = parsed.variables if parsed is not None else ()
    if spec.csv is not None and spec.rows is not None:
        collector.add(CSV_FIELD, "set either template.csv or template.structured, not both")
        return None
    if spec.csv is not None:
        return _csv_rows(spec.csv, variables, collector)
    if spec.rows is not None:
        return _structured_rows(spec.rows, variables, collector)
    collector.add(CSV_FIELD, "a template needs rows: CSV text in template.csv (the first line is the header) "
                             "or template.structured")
    return None


def _too_many(count: int) -> str:
    return f"{count} rows; a batch set has at most {MAX_TEMPLATE_ROWS}"


def _check_missing(row: _Row, variables: tuple[str, ...], errors: _RowErrors) -> None:
    missing = [name for name in variables if name not in row.values]
    if missing:
        names = ", ".join("{" + name + "}" for name in missing)
        errors.add(f"{row.label} has no value for {names}")


def _csv_rows(text: str, variables: tuple[str, ...], collector: ViolationCollector) -> list[_Row] | None:
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    header: list[str] | None = None
    header_line = 0
    records: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            stripped = [cell.strip() for cell in cells]
            if not any(stripped):
                continue
            if header is None:
                header, header_line = stripped, reader.line_num
            else:
                records.append((reader.line_num, stripped))
    except csv.Error as exc:
        collector.add(CSV_FIELD, f"not valid CSV at line {reader.line_num}: {exc} (a quoted value ends with a "
                                 'quote right before the comma or line end; write "" for a quote inside it)')
        return None

    if header is None:
        collector.add(CSV_FIELD, "empty: the first line must be the header naming the columns, then one row a line")
        return None

    ok = True
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if not name:
            collector.add(CSV_FIELD, f"column {position} of the header (line {header_line}) has no name")
            ok = False
        elif name in seen:
            collector.add(CSV_FIELD, f"column name {name!r} appears more than once in the header")
            ok = False
        seen.add(name)
    absent = [name for name in variables if name not in seen]
    if absent:
        names = ", ".join("{" + name + "}" for name in absent)
        columns = ", ".join(repr(name) for name in header if name)
        collector.add(CSV_FIELD, f"the template uses {names} but the header has no such column "
                                 f"(columns: {columns}); header names must match the variables exactly")
        ok = False
    if not records:
        collector.add(CSV_FIELD, "no rows after the header: add one line of values per prompt")
        return None
    if len(records) > MAX_TEMPLATE_ROWS:
        collector.add(CSV_FIELD, _too_many(len(records)))
        return None
    if not ok:
        return None

    errors = _RowErrors(collector, CSV_FIELD)
    rows: list[_Row] = []
    for number, (line, cells) in enumerate(records, start=1):
        row = _Row(f"row {number} (line {line})", dict(zip(header, cells, strict=False)))
        if len(cells) > len(header):
            errors.add(f"{row.label} has {len(cells)} cells but the header has {len(header)} columns "
                       "(quote values that contain commas)")
            continue
        _check_missing(row, variables, errors)
        rows.append(row)
    errors.finish()
    return None if errors.count else rows


def _structured_rows(raw_rows: list[dict[str, str]], variables: tuple[str, ...],
                     collector: ViolationCollector) -> list[_Row] | None:
    if not raw_rows:
        collector.add(STRUCTURED_FIELD, "no rows: add at least one row of values")
        return None
    if len(raw_rows) > MAX_TEMPLATE_ROWS:
        collector.add(STRUCTURED_FIELD, _too_many(len(raw_rows)))
        return None

    errors = _RowErrors(collector, STRUCTURED_FIELD)
    rows: list[_Row] = []
    for index, raw in enumerate(raw_rows):
        row = _Row(f"row {index + 1} (rows[{index}])", {})
        bad = False
        for key, value in raw.items():
            name = key.strip()
            if not name:
                errors.add(f"{row.label} has a value with an empty name")
                bad = True
            elif name in row.values:
                errors.add(f"{row.label} names {name!r} more than once")
                bad = True
            else:
                row.values[name] = value.strip()
        if not bad:
            _check_missing(row, variables, errors)
        rows.append(row)
    errors.finish()
    return None if errors.count else rows
