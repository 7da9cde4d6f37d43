"""Export round trip: trl's preference format as JSONL and as a datasets dataset on disk."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from annotation.export import preference_rows, preferences_export_dataset, preferences_export_jsonl
from annotation.services import assignment_lease_next, guideline_acknowledge, guideline_publish, ranking_submit
from config.exceptions import ApplicationError
from rlhf.models import ModelVersion
from tests.factories import ProjectFactory, PromptFactory, UserFactory, response_set_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def ranked():
    """K=3, overlap 3: three labelers rank the same set; answers 'good' > 'ok' > 'bad' mostly."""
    project = ProjectFactory(k=3, overlap=3)
    admin = UserFactory(role="admin")
    guideline = guideline_publish(project=project, body="Be helpful.", published_by=admin)
    policy = ModelVersion.objects.create(project=project, kind="policy", name="sft-v1", path="/m")
    prompt = PromptFactory(project=project, external_id="p1", text="Say something useful.", tags=["misc"])
    response_set = response_set_create(project=project, prompt=prompt, texts=["good", "ok", "bad"])
    response_set.responses.filter(text="good").update(origin="model", model_version=policy)
    ids = {r.text: r.pk for r in response_set.responses.all()}
    votes = [
        {"good": 1, "ok": 2, "bad": 3},
        {"good": 1, "ok": 2, "bad": 2},  # ok ~ bad tie
        {"good": 2, "ok": 1, "bad": 3},  # prefers ok over good
    ]
    labelers = []
    for index, vote in enumerate(votes):
        user = UserFactory(role="labeler", username=f"lab{index}")
        guideline_acknowledge(guideline=guideline, user=user)
        lease = assignment_lease_next(project=project, labeler=user)
        ranking_submit(
            assignment_id=lease.pk,
            labeler=user,
            idempotency_key=f"k{index}",
            ranks={ids[text]: rank for text, rank in vote.items()},
        )
        labelers.append(user)
    return project, ids


def test_annotator_rows_have_trl_columns_and_exact_agreement(ranked):
    project, _ = ranked
    rows = list(preference_rows(project=project))
    assert len(rows) == 9  # 3 labelers x C(3,2)
    good_ok = [r for r in rows if {r["chosen"], r["rejected"]} == {"good", "ok"}]
    assert sorted((r["chosen"], r["agreement"], r["annotator_ids"][0]) for r in good_ok) == [
        ("good", 2, "lab0"),
        ("good", 2, "lab1"),
        ("ok", 1, "lab2"),
    ]
    tie = next(r for r in rows if r["is_tie"])
    assert (
        tie["margin"] == 0.0 and tie["annotator_ids"] == ["lab1"] and {tie["chosen"], tie["rejected"]} == {"ok", "bad"}
    )
    first = next(r for r in rows if r["chosen"] == "good" and r["rejected"] == "bad" and r["annotator_ids"] == ["lab0"])
    assert first["margin"] == 2.0
    assert first["prompt"] == "Say something useful."
    assert first["chosen_model"] == "sft-v1" and first["rejected_model"] is None
    assert first["guideline_versions"] == [1] and first["tags"] == ["misc"] and first["split"] == "train"
    assert first["n_annotators"] == 3 and len(first["ranking_ids"]) == 1


def test_majority_mode_and_drop_ties(ranked):
    project, _ = ranked
    rows = list(preference_rows(project=project, mode="majority"))
    assert len(rows) == 3
    compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    assert list(preferences_export_jsonl(project=project, mode="majority")) == [compact(r) + "\n" for r in rows]
    by_pair = {frozenset((r["chosen"], r["rejected"])): r for r in rows}
    good_ok = by_pair[frozenset(("good", "ok"))]
    assert (good_ok["chosen"], good_ok["agreement"], good_ok["n_annotators"]) == ("good", 2, 3)
    assert good_ok["annotator_ids"] == ["lab0", "lab1", "lab2"]
    ok_bad = by_pair[frozenset(("ok", "bad"))]
    assert (ok_bad["chosen"], ok_bad["is_tie"], ok_bad["agreement"], ok_bad["margin"]) == ("ok", False, 2, 1.5)
    assert len(list(preference_rows(project=project, drop_ties=True))) == 8
    assert list(preference_rows(project=project, split="test")) == []
    with pytest.raises(ApplicationError) as exc:
        list(preference_rows(project=project, mode="best"))
    assert exc.value.message == "mode: must be one of annotator, majority, consensus, got 'best'."


def test_jsonl_and_dataset_round_trip(ranked, tmp_path):
    from datasets import load_from_disk

    project, _ = ranked
    jsonl = tmp_path / "prefs.jsonl"
    call_command("export_preferences", str(project.pk), "--out", str(jsonl))
    from_json = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert from_json == list(preference_rows(project=project))
    # Byte for byte what json.dumps writes for each row.
    compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    assert jsonl.read_text() == "".join(compact(row) + "\n" for row in preference_rows(project=project))

    assert preferences_export_dataset(project=project, path=tmp_path / "ds") == 9
    dataset = load_from_disk(str(tmp_path / "ds"))
    assert dataset.num_rows == 9
    assert set(dataset.column_names) >= {"prompt", "chosen", "rejected", "margin", "annotator_ids", "ranking_ids"}
    assert [dict(row) for row in dataset] == [{**row, "margin": pytest.approx(row["margin"])} for row in from_json]


def test_chat_prompts_export_conversational(tmp_path, labeler):
    project = ProjectFactory(k=2, overlap=1)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    prompt = PromptFactory(project=project, text="", messages=messages)
    response_set_create(project=project, prompt=prompt, texts=["Hello!", "Go away."])
    lease = assignment_lease_next(project=project, labeler=labeler)
    hello = next(pk for pk in lease.display_order if project.response_sets.get().responses.get(pk=pk).text == "Hello!")
    other = next(pk for pk in lease.display_order if pk != hello)
    ranking_submit(assignment_id=lease.pk, labeler=labeler, idempotency_key="c", ranks={hello: 1, other: 2})
    (row,) = preference_rows(project=project)
    compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    assert list(preferences_export_jsonl(project=project)) == [compact(row) + "\n"]
    assert row["prompt"] == messages
    assert row["chosen"] == [{"role": "assistant", "content": "Hello!"}]
    assert row["rejected"] == [{"role": "assistant", "content": "Go away."}]
    from datasets import load_from_disk

    preferences_export_dataset(project=project, path=tmp_path / "chat")
    assert load_from_disk(str(tmp_path / "chat"))[0]["prompt"] == messages


def test_export_api_streams_jsonl(ranked, client_for, ml_engineer):
    project, _ = ranked
    response = client_for(ml_engineer).get(f"/api/v1/projects/{project.pk}/export/?mode=majority&drop_ties=true")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/jsonl; charset=utf-8"
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 3
    bad = client_for(ml_engineer).get(f"/api/v1/projects/{project.pk}/export/?split=dev")
    assert bad.status_code == 400
    assert bad.json()["detail"] == 'split: "dev" is not a valid choice.'
