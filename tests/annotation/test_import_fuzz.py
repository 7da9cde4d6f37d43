"""Import inputs an API fuzzer found: each is a 400 naming the line and field, and nothing is written."""

from __future__ import annotations

import json

import pytest

from annotation.models import Prompt, Response, ResponseSet
from annotation.services import prompts_import
from config.exceptions import ApplicationError
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

NON_FINITE = "NaN, Infinity and numbers too large for a float (such as 1e400) cannot be stored"


def _refused(project, content, fmt):
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, content=content, fmt=fmt)
    assert exc.value.status == 400 and exc.value.code == "import_invalid"
    assert (Prompt.objects.count(), Response.objects.count(), ResponseSet.objects.count()) == (0, 0, 0)
    return exc.value


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_metadata_and_sampling_are_row_errors(number):
    project = ProjectFactory(k=2)
    content = (
        '{"external_id": "ok", "prompt": "p", "responses": ["a", "b"]}\n'
        f'{{"external_id": "m", "prompt": "p", "metadata": {{"score": [1, {number}]}}}}\n'
        '{"external_id": "s", "prompt": "p", "responses": ["a", '
        f'{{"text": "b", "sampling": {{"temperature": {number}}}}}]}}\n'
    )
    error = _refused(project, content, "jsonl")
    assert error.message == (
        f"2 row(s) have errors; nothing was imported. First: line 2, field 'metadata.score[1]': {NON_FINITE}."
    )
    assert error.errors == [
        {"line": 2, "field": "metadata.score[1]", "message": NON_FINITE},
        {"line": 3, "field": "responses[1].sampling.temperature", "message": NON_FINITE},
    ]


def test_non_finite_numbers_in_csv_metadata_are_row_errors():
    project = ProjectFactory(k=2)
    content = 'external_id,prompt,metadata\nq1,p,"{""score"": NaN}"\n'
    error = _refused(project, content, "csv")
    assert error.errors == [{"line": 2, "field": "metadata.score", "message": NON_FINITE}]


def test_csv_field_over_the_size_limit_names_the_line():
    project = ProjectFactory(k=2)
    content = "external_id,prompt\nq1,short\nq2," + "x" * 131_073 + "\n"
    error = _refused(project, content, "csv")
    assert error.message == (
        "1 row(s) have errors; nothing was imported. First: line 3: a field is longer than 131,072 characters."
    )
    assert error.errors == [{"line": 3, "field": "", "message": "a field is longer than 131,072 characters"}]


def test_csv_with_an_unbalanced_quote_names_the_line():
    project = ProjectFactory(k=2)
    content = 'external_id,prompt\nq1,fine\nq2,"never closed\nq3,swallowed\n'
    error = _refused(project, content, "csv")
    assert error.message == (
        "1 row(s) have errors; nothing was imported. First: line 3: "
        'a quoted field is not closed (unbalanced ") before the end of the file.'
    )
    assert error.errors == [
        {"line": 3, "field": "", "message": 'a quoted field is not closed (unbalanced ") before the end of the file'}
    ]


def test_csv_text_after_a_closing_quote_names_the_line():
    project = ProjectFactory(k=2)
    error = _refused(project, 'external_id,prompt\nq1,"quoted" tail\n', "csv")
    assert error.errors == [{"line": 2, "field": "", "message": "not valid CSV (',' expected after '\"')"}]


def test_csv_response_header_with_a_non_ascii_digit_is_an_unknown_field():
    project = ProjectFactory(k=2)
    content = "external_id,prompt,response_1,response_\u00b2\nq1,p,a,b\n"
    error = _refused(project, content, "csv")
    assert error.errors == [{"line": 2, "field": "response_\u00b2", "message": "unknown field"}]


def test_jsonl_strings_with_unicode_line_separators_import_with_the_right_lines():
    project = ProjectFactory(k=2)
    # json.dumps(ensure_ascii=False) writes U+2028 and U+0085 raw: valid JSON, not line breaks.
    content = (
        "\r\n".join(
            json.dumps(row, ensure_ascii=False)
            for row in [
                {"external_id": "a", "prompt": "one\u2028two", "responses": ["x\u0085y", "z"]},
                {"external_id": "b", "prompt": "three\u2029four"},
            ]
        )
        + "\r\n"
    )
    summary = prompts_import(project=project, content=content, fmt="jsonl")
    assert (summary.prompts, summary.responses, summary.response_sets) == (2, 2, 1)
    assert Prompt.objects.get(external_id="a").text == "one\u2028two"
    assert Response.objects.filter(text="x\u0085y").count() == 1

    bad = (
        json.dumps({"external_id": "c", "prompt": "five\u2028six"}, ensure_ascii=False)
        + "\n"
        + '{"external_id": 1.5}\n'
    )
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, content=bad, fmt="jsonl")
    assert [(e["line"], e["field"]) for e in exc.value.errors] == [(2, "external_id"), (2, "prompt")]
    assert Prompt.objects.count() == 2


def test_jsonl_with_a_huge_integer_or_deep_nesting_is_a_row_error():
    project = ProjectFactory(k=2)
    content = (
        '{"external_id": "a", "prompt": "p", "metadata": {"n": ' + "9" * 5000 + "}}\n"
        '{"external_id": "b", "prompt": "p", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
        '{"external_id": "c", "prompt": "p", "metadata": {"x": ' + "[" * 31 + "]" * 31 + "}}\n"
        '{"external_id": "d", "prompt": "p", "metadata": {"x": ' + "[" * 30 + "]" * 30 + "}}\n"  # 32 deep: fine
    )
    error = _refused(project, content, "jsonl")
    assert error.errors == [
        {"line": 1, "field": "", "message": "not valid JSON (a number has more than 4300 digits)"},
        {"line": 2, "field": "", "message": "not valid JSON (nested deeper than 32 levels)"},
        {"line": 3, "field": "", "message": "not valid JSON (nested deeper than 32 levels)"},
    ]


def test_refused_import_over_the_api_is_a_400(client_for, admin_user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    project = ProjectFactory(k=2)
    upload = SimpleUploadedFile("rows.jsonl", b'{"external_id": "a", "prompt": "p", "metadata": {"x": NaN}}\n')
    response = client_for(admin_user).post(
        f"/api/v1/projects/{project.pk}/import/", {"file": upload}, format="multipart"
    )
    assert response.status_code == 400
    assert response.json() == {
        "detail": f"1 row(s) have errors; nothing was imported. First: line 1, field 'metadata.x': {NON_FINITE}.",
        "code": "import_invalid",
        "errors": [{"line": 1, "field": "metadata.x", "message": NON_FINITE}],
    }
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_import_limits_on_text_and_rows_name_line_and_field(settings):
    settings.IMPORT_MAX_TEXT_CHARS = 50
    settings.IMPORT_MAX_ROWS = 2
    project = ProjectFactory(k=2)
    long_row = json.dumps({"external_id": "a", "prompt": "p" * 51, "responses": ["ok", "r" * 60]})
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, content=long_row + "\n", fmt="jsonl")
    assert [(e["line"], e["field"], e["message"]) for e in exc.value.errors] == [
        (1, "prompt", "is 51 characters; at most 50 are accepted"),
        (1, "responses[1].text", "is 60 characters; at most 50 are accepted"),
    ]
    rows = "".join(json.dumps({"external_id": str(i), "prompt": "p"}) + "\n" for i in range(3))
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, content=rows, fmt="jsonl")
    assert exc.value.message == "file: more than 2 rows; import at most that many per file."
    assert Prompt.objects.filter(project=project).count() == 0
