"""Batch sets: a prompt template expanded over CSV or structured rows."""

from __future__ import annotations

import pytest

from imagineer_common.errors import InvalidArgument, ViolationCollector
from imagineer_generator.plan import TemplateSpec
from imagineer_generator.templates import (
    MAX_PROMPT_CHARS,
    MAX_ROW_VIOLATIONS,
    MAX_TEMPLATE_ROWS,
    expand_template,
    expand_template_into,
)


def violations(spec: TemplateSpec) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as info:
        expand_template(spec)
    return [(v.field, v.description) for v in info.value.violations]


def fields(spec: TemplateSpec) -> list[str]:
    return [field for field, _ in violations(spec)]


# --- expansion -------------------------------------------------------------------------------------------


def test_csv_rows_fill_the_variables_in_row_order():
    spec = TemplateSpec("a {animal} in {place}, oil painting", csv="animal,place\nfox,the snow\nowl,a barn\n")
    assert expand_template(spec) == ["a fox in the snow, oil painting", "a owl in a barn, oil painting"]


def test_structured_rows_fill_the_variables():
    rows = [{"animal": "fox", "time": "dawn"}, {"animal": "cat", "time": "noon"}]
    spec = TemplateSpec("{animal} at {time}", rows=rows)
    assert expand_template(spec) == ["fox at dawn", "cat at noon"]


def test_a_variable_used_twice_gets_the_same_value():
    assert expand_template(TemplateSpec("{a} and {a}", rows=[{"a": "x"}])) == ["x and x"]


def test_quoted_csv_values_may_contain_commas_and_quotes():
    spec = TemplateSpec("a {animal} in {place}", csv='animal, place\nfox, "snow, at night"\n"big ""red"" owl",barn\n')
    assert expand_template(spec) == ['a fox in snow, at night', 'a big "red" owl in barn']


def test_csv_header_and_values_are_stripped_and_blank_lines_skipped():
    spec = TemplateSpec("[{ animal }]", csv="\n\n  animal  , unused \r\n\n   fox   ,1\r\n  \n,\n cat ,2\n\n")
    assert expand_template(spec) == ["[fox]", "[cat]"]


def test_byte_order_mark_is_ignored():
    assert expand_template(TemplateSpec("{animal}", csv="\ufeffanimal\nfox\n")) == ["fox"]


def test_extra_columns_are_allowed_and_short_rows_are_fine_when_the_missing_cell_is_unused():
    spec = TemplateSpec("a {animal}", csv="animal,notes,more\nfox,quick,x\ncat\n")
    assert expand_template(spec) == ["a fox", "a cat"]
    assert expand_template(TemplateSpec("a {animal}", rows=[{"animal": "fox", "notes": "x"}])) == ["a fox"]


def test_empty_values_are_allowed():
    spec = TemplateSpec("a {style} {animal}", csv='style,animal\n,fox\n"",owl\n')
    assert expand_template(spec) == ["a  fox", "a  owl"]
    assert expand_template(TemplateSpec("a {style} fox", rows=[{"style": ""}])) == ["a  fox"]


def test_literal_braces():
    spec = TemplateSpec("{{not a var}} {animal} }}{{", rows=[{"animal": "fox"}])
    assert expand_template(spec) == ["{not a var} fox }{"]


def test_values_are_not_expanded_again():
    assert expand_template(TemplateSpec("a {animal}", rows=[{"animal": "{place} {{x}}"}])) == ["a {place} {{x}}"]


def test_max_rows_is_allowed():
    csv_text = "n\n" + "".join(f"{i}\n" for i in range(MAX_TEMPLATE_ROWS))
    prompts = expand_template(TemplateSpec("image {n}", csv=csv_text))
    assert len(prompts) == MAX_TEMPLATE_ROWS and prompts[-1] == f"image {MAX_TEMPLATE_ROWS - 1}"


def test_prompt_of_exactly_the_limit_is_allowed():
    value = "x" * (MAX_PROMPT_CHARS - 2)
    assert expand_template(TemplateSpec("a {v}", rows=[{"v": value}])) == ["a " + value]


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["", "   "])
def test_empty_template_is_refused(template):
    assert fields(TemplateSpec(template, csv="a\nb\n")) == ["template.template"]


def test_template_without_variables_is_refused():
    (field, description), = violations(TemplateSpec("a fox {{literal}}", csv="a\nb\n"))
    assert field == "template.template" and "no {variables}" in description


@pytest.mark.parametrize("template", ["{a.b}", "{a[0]}", "{a!r}", "{a:>5}", "{}", "{ }", "a {b", "a } b", "{a{b}}"])
def test_placeholders_other_than_bare_names_are_refused(template):
    assert fields(TemplateSpec(template, rows=[{"a": "x", "b": "y"}])) == ["template.template"]


def test_too_long_template_is_refused():
    assert fields(TemplateSpec("{a}" + "x" * MAX_PROMPT_CHARS, rows=[{"a": "x"}])) == ["template.template"]


def test_too_long_expanded_prompt_names_the_row():
    (field, description), = violations(TemplateSpec("a {v}", rows=[{"v": "ok"}, {"v": "x" * MAX_PROMPT_CHARS}]))
    assert field == "template.template" and "row 2" in description and str(MAX_PROMPT_CHARS) in description


def test_variable_missing_from_csv_header_names_the_variable():
    (field, description), = violations(TemplateSpec("a {animal} in {place}", csv="animal,where\nfox,snow\n"))
    assert field == "template.csv" and "{place}" in description and "'where'" in description


def test_variable_missing_from_a_csv_row_names_the_variable_and_row():
    (field, description), = violations(TemplateSpec("a {animal} in {place}", csv="animal,place\nfox,snow\n\nowl\n"))
    assert field == "template.csv"
    assert "{place}" in description and "row 2" in description and "line 4" in description


def test_variable_missing_from_a_structured_row_names_the_variable_and_row():
    spec = TemplateSpec("a {animal} in {place}", rows=[{"animal": "fox", "place": "snow"}, {"animal": "owl"}])
    (field, description), = violations(spec)
    assert field == "template.structured" and "{place}" in description and "row 2" in description


@pytest.mark.parametrize("csv_text", ["", "  \n\n", ",,\n"])
def test_empty_csv_is_refused(csv_text):
    (field, description), = violations(TemplateSpec("{a}", csv=csv_text))
    assert field == "template.csv" and "empty" in description


def test_csv_with_only_a_header_has_no_rows():
    (field, description), = violations(TemplateSpec("{a}", csv="a\n"))
    assert field == "template.csv" and "no rows" in description


def test_no_structured_rows_is_refused():
    assert fields(TemplateSpec("{a}", rows=[])) == ["template.structured"]


def test_no_rows_source_is_refused():
    assert fields(TemplateSpec("{a}")) == ["template.csv"]


def test_both_rows_sources_are_refused():
    assert fields(TemplateSpec("{a}", csv="a\nx\n", rows=[{"a": "x"}])) == ["template.csv"]


def test_too_many_rows_is_refused():
    csv_text = "n\n" + "".join(f"{i}\n" for i in range(MAX_TEMPLATE_ROWS + 1))
    (field, description), = violations(TemplateSpec("{n}", csv=csv_text))
    assert field == "template.csv" and str(MAX_TEMPLATE_ROWS + 1) in description
    rows = [{"n": str(i)} for i in range(MAX_TEMPLATE_ROWS + 1)]
    assert fields(TemplateSpec("{n}", rows=rows)) == ["template.structured"]


def test_header_with_duplicate_or_empty_names_is_refused():
    found = violations(TemplateSpec("{a}", csv="a,b, a ,\nx,y,z,w\n"))
    assert [field for field, _ in found] == ["template.csv", "template.csv"]
    assert "'a'" in found[0][1] and "column 4" in found[1][1]


def test_row_with_more_cells_than_the_header_is_refused():
    (field, description), = violations(TemplateSpec("{a}", csv="a,b\nx,y\nx,y,z\n"))
    assert field == "template.csv" and "row 2" in description and "3 cells" in description


def test_structured_row_with_empty_or_repeated_names_is_refused():
    found = violations(TemplateSpec("{a}", rows=[{"a": "x", " ": "y"}, {"a": "x", " a": "y"}]))
    assert [field for field, _ in found] == ["template.structured", "template.structured"]
    assert "row 1" in found[0][1] and "row 2" in found[1][1]


@pytest.mark.parametrize("csv_text", ['a\n"unterminated\nb\n', 'a\n"abc"def\n'])
def test_invalid_csv_is_refused(csv_text):
    (field, description), = violations(TemplateSpec("{a}", csv=csv_text))
    assert field == "template.csv" and "line" in description


def test_template_and_rows_problems_are_reported_together():
    assert fields(TemplateSpec("{a.b}", csv="a,a\nx,y\n")) == ["template.template", "template.csv"]


def test_many_bad_rows_are_summarised():
    csv_text = "a,b\n" + "x\n" * 30
    found = violations(TemplateSpec("{a}{b}", csv=csv_text))
    assert len(found) == MAX_ROW_VIOLATIONS + 1
    assert found[-1][1].startswith(f"... and {30 - MAX_ROW_VIOLATIONS} more")


def test_expand_into_adds_to_an_existing_collector():
    collector = ViolationCollector()
    collector.add("other", "already wrong")
    assert expand_template_into(TemplateSpec("{a}", rows=[{"a": "x"}]), collector) == ["x"]
    assert expand_template_into(TemplateSpec("{a}", rows=[]), collector) is None
    assert [v.field for v in collector.violations] == ["other", "template.structured"]
