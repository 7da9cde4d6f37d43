"""Import: JSONL and CSV, chat prompts, every bad row reported by line and field, nothing half-written."""

from __future__ import annotations

import json

import pytest

from annotation.models import Prompt, Response, ResponseSet
from annotation.services import prompts_import
from config.exceptions import ApplicationError
from rlhf.models import ModelVersion
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def _jsonl(*rows):
    return "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n"


def test_jsonl_with_text_and_chat_prompts_builds_response_sets():
    project = ProjectFactory(k=2, overlap=2)
    sft = ModelVersion.objects.create(project=project, kind="policy", name="sft-v1", path="/models/sft")
    content = _jsonl(
        {"external_id": "a", "prompt": "Say hi", "tags": ["greeting"], "responses": ["hi", "hello"]},
        {
            "external_id": "b",
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
            "split": "val",
            "responses": [
                {
                    "text": "4",
                    "origin": "model",
                    "model_version": "sft-v1",
                    "sampling": {"temperature": 0.7, "seed": 3},
                },
                {"text": "four", "origin": "human"},
                "5",
                "IV",
            ],
        },
        {"external_id": "c", "prompt": "No responses yet"},
    )
    summary = prompts_import(project=project, content=content, fmt="jsonl")
    assert (summary.prompts, summary.responses, summary.response_sets) == (3, 6, 3)
    chat = Prompt.objects.get(external_id="b")
    assert chat.messages[-1] == {"role": "user", "content": "2+2?"} and chat.text == "" and chat.split == "val"
    model_response = Response.objects.get(text="4")
    assert model_response.model_version == sft and model_response.sampling == {"temperature": 0.7, "seed": 3}
    assert ResponseSet.objects.filter(prompt=chat).count() == 2
    assert all(rs.items.count() == 2 and rs.required_count == 2 for rs in ResponseSet.objects.all())


def test_csv_with_numbered_response_columns_and_quoted_newlines():
    project = ProjectFactory(k=2)
    content = (
        "external_id,prompt,split,tags,response_1,response_2\n"
        'q1,"Write a poem\nabout rain",train,poetry;weather,"Rain falls",Drip drop\n'
        "q2,Capital of France?,test,,Paris,Lyon\n"
    )
    summary = prompts_import(project=project, content=content.encode(), fmt="csv")
    assert (summary.prompts, summary.response_sets) == (2, 2)
    q1 = Prompt.objects.get(external_id="q1")
    assert q1.text == "Write a poem\nabout rain" and q1.tags == ["poetry", "weather"]


def test_bad_rows_are_all_reported_and_nothing_is_written():
    project = ProjectFactory(k=2)
    Prompt.objects.create(project=project, external_id="taken", text="x")
    content = _jsonl(
        {"external_id": "ok", "prompt": "fine", "responses": ["a", "b"]},
        "{not json",
        {"external_id": "ok", "prompt": "dup", "responses": ["a", "b"]},
        {"external_id": "x3", "prompt": "odd", "responses": ["a", "b", "c"]},
        {"external_id": "x4", "prompt": "", "split": "holdout"},
        {"external_id": "x5", "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {
            "external_id": "x6",
            "prompt": "p",
            "responses": [{"text": "a", "origin": "model", "model_version": "nope"}, "b"],
        },
        {"external_id": "taken", "prompt": "again"},
    )
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, content=content, fmt="jsonl")
    error = exc.value
    assert error.status == 400 and error.code == "import_invalid"
    assert error.message == (
        "7 row(s) have errors; nothing was imported. First: line 2: not valid JSON "
        "(Expecting property name enclosed in double quotes at column 2)."
    )
    assert [(e["line"], e["field"]) for e in error.errors] == [
        (2, ""),
        (3, "external_id"),
        (4, "responses"),
        (5, "prompt"),
        (5, "split"),
        (6, "prompt"),
        (7, "responses[0].model_version"),
        (8, "external_id"),
    ]
    assert error.errors[1]["message"] == "'ok' also appears on line 1"
    assert error.errors[2]["message"] == "expected a multiple of K=2 responses (one response set per 2), got 3"
    assert error.errors[4]["message"] == "must be one of train, val, test, got 'holdout'"
    assert error.errors[5]["message"] == "the last message must be the user's turn"
    assert error.errors[6]["message"] == "no model version named 'nope' in this project"
    assert error.errors[7]["message"] == "'taken' already exists in this project"
    assert Prompt.objects.count() == 1 and Response.objects.count() == 0 and ResponseSet.objects.count() == 0


def test_csv_errors_name_the_physical_line():
    project = ProjectFactory(k=2)
    content = 'external_id,prompt,response_1,response_2\nq1,"multi\nline",a,b\nq2,,a,b\n'
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, content=content, fmt="csv")
    assert exc.value.errors == [
        {"line": 4, "field": "prompt", "message": "is required (a string or a list of chat messages)"}
    ]


def test_empty_and_non_utf8_files():
    project = ProjectFactory(k=2)
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, content=b"\n\n", fmt="jsonl")
    assert exc.value.message == "file: the file has no rows."
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, content=b'{"a": 1}\n{"b": "\xff"}\n', fmt="jsonl")
    assert exc.value.message == "line 2: the file is not valid UTF-8."


def test_import_over_the_api_reports_lines(client_for, admin_user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    project = ProjectFactory(k=2)
    client = client_for(admin_user)
    bad = SimpleUploadedFile("rows.jsonl", b'{"external_id": "a", "prompt": "p", "responses": ["x"]}\n')
    response = client.post(f"/api/v1/projects/{project.pk}/import/", {"file": bad}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "1 row(s) have errors; nothing was imported. First: line 1, field 'responses': "
        "expected a multiple of K=2 responses (one response set per 2), got 1.",
        "code": "import_invalid",
        "errors": [
            {
                "line": 1,
                "field": "responses",
                "message": "expected a multiple of K=2 responses (one response set per 2), got 1",
            }
        ],
    }
    good = SimpleUploadedFile("rows.csv", b"external_id,prompt,response_1,response_2\na,p,x,y\n")
    response = client.post(f"/api/v1/projects/{project.pk}/import/", {"file": good}, format="multipart")
    assert response.status_code == 201
    assert response.json() == {"prompts": 1, "responses": 2, "response_sets": 1}


def test_nul_characters_are_a_row_error_not_a_server_error():
    project = ProjectFactory(k=2)
    content = _jsonl(
        {"external_id": "ok", "prompt": "fine", "responses": ["a", "b"]},
        {"external_id": "nul", "prompt": "bad\u0000prompt", "responses": ["a", "b\u0000"]},
    )
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, content=content, fmt="jsonl")
    assert exc.value.errors == [
        {"line": 2, "field": "prompt", "message": "contains a NUL character (\\u0000)"},
        {"line": 2, "field": "responses[1]", "message": "contains a NUL character (\\u0000)"},
    ]
    assert Prompt.objects.count() == 0


def test_unpaired_surrogates_are_a_row_error_not_a_server_error():
    project = ProjectFactory(k=2)
    # json.dumps writes the lone surrogate as \ud800, which json.loads turns back into one.
    content = _jsonl({"external_id": "s", "prompt": "ok", "responses": ["a", "b\ud800"], "tags": ["\udfff"]})
    with pytest.raises(ApplicationError) as exc:
        prompts_import(project=project, content=content, fmt="jsonl")
    assert exc.value.errors == [
        {"line": 1, "field": "responses[1]", "message": "contains an unpaired surrogate (\\ud800-\\udfff)"},
        {"line": 1, "field": "tags[0]", "message": "contains an unpaired surrogate (\\ud800-\\udfff)"},
    ]
    assert Prompt.objects.count() == 0
