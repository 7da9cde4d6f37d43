"""The quality pages through Django's test client, on the worked example of the agreement report
(tests/quality/test_report.py): set 1 (x, y, z) ranked by l0, l1, l2; set 2 (u, v, w)
by l0 and l1. Label pairs: l0-l1 4/6 agree, l0-l2 2/3, l1-l2 1/3; overall 7/12."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from annotation.models import Ranking, ResponseSet, ResponseSetStatus, ReviewState
from annotation.services import assignment_lease_next, ranking_submit
from labelers.models import LabelerStatus, Role
from labelers.services import user_update
from quality.models import AUTO_PAUSE_PREFIX, ConsensusSource, LabelerQuality, QualificationState, ResponseSetConsensus
from quality.services import agreement_report_refresh
from tests.factories import ProjectFactory, PromptFactory, UserFactory, response_set_create

pytestmark = pytest.mark.django_db


def _rank(project, user, by_text, **extra):
    lease = assignment_lease_next(project=project, labeler=user)
    texts = dict(lease.response_set.responses.values_list("id", "text"))
    ids = {text: pk for pk, text in texts.items()}
    for key in ("scores", "flags"):
        if key in extra:
            extra[key] = {str(ids[text]): value for text, value in extra[key].items()}
    ranking, _ = ranking_submit(
        assignment_id=lease.pk,
        labeler=user,
        idempotency_key=f"{user.pk}-{lease.pk}",
        ranks={pk: by_text[texts[pk]] for pk in texts},
        **extra,
    )
    return ranking


@pytest.fixture
def worked(settings):
    settings.QUALITY_BOOTSTRAP_RESAMPLES = 200
    project = ProjectFactory(k=3, overlap=3, name="Worked")
    first = response_set_create(
        project=project, prompt=PromptFactory(project=project, tags=["math"]), texts=["x", "y", "z"]
    )
    second = response_set_create(
        project=project, prompt=PromptFactory(project=project, tags=["math", "code"]), texts=["u", "v", "w"]
    )
    second.required_count = 2
    second.save()
    l0, l1, l2 = (UserFactory(role="labeler", username=name) for name in ("l0", "l1", "l2"))
    _rank(project, l0, {"x": 1, "y": 2, "z": 3})
    _rank(project, l1, {"x": 1, "y": 2, "z": 2})
    _rank(project, l2, {"x": 2, "y": 1, "z": 3})
    _rank(project, l0, {"u": 1, "v": 1, "w": 2})
    _rank(project, l1, {"u": 1, "v": 2, "w": 3})
    agreement_report_refresh(project=project, force=True)
    project.sets = (first, second)
    project.labelers = (l0, l1, l2)
    return project


@pytest.fixture
def disputed(settings):
    """One set two labelers rank in opposite orders (Kendall's W 0: it goes to review), one they
    agree on."""
    settings.QUALITY_BOOTSTRAP_RESAMPLES = 200
    project = ProjectFactory(k=3, overlap=2, name="Disputed")
    split = response_set_create(project=project, texts=["x", "y", "z"])
    agreed = response_set_create(project=project, texts=["p", "q", "r"])
    d0, d1 = UserFactory(role="labeler", username="d0"), UserFactory(role="labeler", username="d1")
    first = _rank(
        project,
        d0,
        {"x": 1, "y": 2, "z": 3},
        scores={"x": 6, "z": 2},
        flags={"z": ["hallucination"]},
        comment="z invents a date",
        time_spent_ms=4200,
    )
    second = _rank(project, d1, {"x": 3, "y": 2, "z": 1}, time_spent_ms=65000)
    _rank(project, d0, {"p": 1, "q": 2, "r": 3})
    _rank(project, d1, {"p": 1, "q": 2, "r": 3})
    agreement_report_refresh(project=project, force=True)
    project.split, project.agreed = split, agreed
    project.rankings = (first, second)
    return project


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _set_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-set-id="(\d+)">', response.content.decode())]


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.parametrize("role", [Role.ADMIN, Role.ML_ENGINEER])
def test_quality_page_shows_the_report_for_admins_and_ml_engineers(worked, make_user, role):
    response = _client(make_user(role, username="viewer")).get(f"/manage/projects/{worked.pk}/quality/")
    assert response.status_code == 200
    page = response.content.decode()
    head = worked.agreement_reports.first().data["headline"]
    items = {item["key"]: item for item in response.context["headline"]}
    assert (items["percent_agreement"]["value"], items["percent_agreement"]["note"]) == ("58.3%", "12 label pairs")
    low, high = head["percent_agreement"]["ci95"]
    assert items["percent_agreement"]["ci"] == f"95% CI {low * 100:.1f}% – {high * 100:.1f}%"
    assert items["percent_agreement_no_ties"]["value"] == "77.8%"
    assert items["kendall_w_mean"]["value"] == f"{(126 / 198 + 78 / 84) / 2:.3f}" == "0.782"
    assert items["kendall_w_mean"]["note"] == "2 sets"
    assert [item["key"] for item in response.context["headline"]] == [
        "percent_agreement",
        "percent_agreement_no_ties",
        "krippendorff_alpha_ordinal",
        "krippendorff_alpha_interval_ranks",
        "fleiss_kappa",
        "kendall_w_mean",
        "kendall_tau_mean",
        "consensus_confidence_mean",
    ]
    assert "Percent agreement <b>58.3%</b>" in page
    assert "a tie is a third answer and agrees only with a tie" in page
    assert "Report computed just now, includes every ranking" in _text(page)
    assert page.count("download>") == 6 and f"/api/v1/projects/{worked.pk}/agreement/by_labeler_pair.csv" in page

    heatmap = {
        (row["username"], other): cell["value"]
        for row in response.context["heatmap"]["rows"]
        for other, cell in zip(response.context["heatmap"]["labelers"], row["cells"], strict=True)
    }
    assert heatmap[("l0", "l1")] == heatmap[("l1", "l0")] == round(4 / 6, 6)
    assert heatmap[("l0", "l2")] == round(2 / 3, 6) and heatmap[("l1", "l2")] == round(1 / 3, 6)
    _, l1, l2 = worked.labelers
    assert f'?pair={l1.pk}-{l2.pk}" hx-target="#drilldown" hx-swap="innerHTML show:top">33%</a>' in page

    rows = {row["figures"].username: row["figures"] for row in response.context["labelers"]}
    assert [rows[name].percent_agreement for name in ("l0", "l1", "l2")] == [round(6 / 9, 6), round(5 / 9, 6), 0.5]
    table = _text(page[page.index('id="labeler-quality"') :])
    assert "l2 1 50.0% 6" in table
    assert ("Let back in" in page) is False
    assert response.context["can_act"] is (role == Role.ADMIN)
    assert [point.label for point in response.context["over_time"].points] == [
        row["date"] for row in worked.agreement_reports.first().data["over_time"]
    ]


def test_labelers_get_403_on_every_quality_page_and_action(worked, disputed, labeler):
    client = _client(labeler)
    set_id = disputed.split.pk
    for url in (
        "/manage/quality/",
        f"/manage/projects/{worked.pk}/quality/",
        f"/manage/projects/{worked.pk}/quality/sets/?tag=math",
        f"/manage/projects/{disputed.pk}/review/",
        f"/manage/projects/{disputed.pk}/review/{set_id}/",
    ):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "Only admins or ml engineers use this page." in response.content.decode()
    for url in (
        f"/manage/projects/{worked.pk}/quality/refresh/",
        f"/manage/projects/{worked.pk}/quality/labelers/{labeler.pk}/override/",
        f"/manage/projects/{disputed.pk}/review/{set_id}/more-labels/",
    ):
        assert client.post(url).status_code == 403, url
    assert ResponseSet.objects.get(pk=set_id).required_count == 2


def test_anonymous_users_go_to_the_login_page(worked):
    response = Client().get(f"/manage/projects/{worked.pk}/quality/")
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=/manage/projects/{worked.pk}/quality/"


def test_quality_index_and_navigation(worked, disputed, ml_engineer):
    response = _client(ml_engineer).get("/manage/quality/")
    assert response.status_code == 200
    rows = {row["project"].name: row for row in response.context["rows"]}
    assert rows["Worked"]["agreement"] == round(7 / 12, 6) and rows["Worked"]["review"] == 0
    assert rows["Disputed"]["review"] == 1
    page = response.content.decode()
    assert '<a class="nav-link active" href="/manage/quality/">Quality</a>' in page
    assert f'<a href="/manage/projects/{disputed.pk}/review/">1</a>' in page


def test_freshness_counts_rankings_the_report_has_not_seen(worked, admin_user):
    response_set_create(project=worked, texts=["a", "b", "c"])
    _rank(worked, worked.labelers[0], {"a": 1, "b": 2, "c": 3})
    page = _client(admin_user).get(f"/manage/projects/{worked.pk}/quality/").content.decode()
    assert "Report computed just now, 1 ranking not included yet" in _text(page)
    assert 'class="freshness stale"' in page


def test_a_project_without_a_report_says_so(admin_user, project):
    page = _client(admin_user).get(f"/manage/projects/{project.pk}/quality/").content.decode()
    assert "Report not computed yet, 0 rankings waiting" in _text(page)
    assert "No agreement report yet." in page and 'id="headline"' not in page


def test_refresh_now_queues_a_forced_recomputation(worked, ml_engineer, monkeypatch):
    from quality.tasks import agreement_refresh

    calls = []
    monkeypatch.setattr(agreement_refresh, "delay", lambda *args: calls.append(args))
    client = _client(ml_engineer)
    response = client.post(f"/manage/projects/{worked.pk}/quality/refresh/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Refresh queued: a worker recomputes the report; reload this page in a moment." in response.content.decode()
    assert response.content.decode().startswith('<div id="freshness"')
    response = client.post(f"/manage/projects/{worked.pk}/quality/refresh/")
    assert response.status_code == 302 and response["Location"] == f"/manage/projects/{worked.pk}/quality/"
    assert calls == [(worked.pk, True), (worked.pk, True)]
    assert client.get(f"/manage/projects/{worked.pk}/quality/refresh/").status_code == 405


def test_refresh_reports_a_broker_outage(worked, admin_user, monkeypatch):
    from quality.tasks import agreement_refresh

    def fail(*args):
        raise ConnectionError("broker down")

    monkeypatch.setattr(agreement_refresh, "delay", fail)
    response = _client(admin_user).post(f"/manage/projects/{worked.pk}/quality/refresh/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "The task queue cannot be reached; the report was not refreshed." in response.content.decode()


def test_drill_down_lists_the_sets_behind_each_number(worked, ml_engineer):
    client = _client(ml_engineer)
    first, second = (s.pk for s in worked.sets)
    l0, l1, l2 = (u.pk for u in worked.labelers)
    base = f"/manage/projects/{worked.pk}/quality/sets/"

    response = client.get(f"{base}?pair={l0}-{l1}", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and _set_ids(response) == [first, second]
    assert [(row["agreeing"], row["pairs"]) for row in response.context["result"]["sets"]] == [(2, 3), (2, 3)]
    assert "Sets both l0 and l1 ranked" in response.content.decode()
    assert "2 sets · 4 of 6 label pairs agree (66.7%)" in response.content.decode()
    assert "<html" not in response.content.decode()  # htmx gets the fragment only

    response = client.get(f"{base}?pair={l1}-{l2}")
    assert _set_ids(response) == [first] and response.context["result"]["percent_agreement"] == round(1 / 3, 6)
    assert "<html" in response.content.decode()

    # A labeler's figure counts every label pair they are in, as in the per-labeler table.
    response = client.get(f"{base}?labeler={l2}")
    assert _set_ids(response) == [first]
    assert (response.context["result"]["agreeing"], response.context["result"]["pairs"]) == (3, 6)

    assert _set_ids(client.get(f"{base}?tag=code")) == [second]
    response = client.get(f"{base}?tag=math")
    assert _set_ids(response) == [first, second]  # lowest agreement first: 5/9, then 2/3
    assert response.context["result"]["percent_agreement"] == round(7 / 12, 6)
    assert _set_ids(client.get(f"{base}?version=0")) == [first, second]
    assert _set_ids(client.get(f"{base}?version=1")) == []
    assert _set_ids(client.get(f"{base}?low=1")) == []
    response = client.get(f"{base}?pair=nope")
    assert response.status_code == 400
    assert "pair: expected a number, got &#x27;nope&#x27;." in response.content.decode()


def test_review_queue_lists_low_agreement_sets(disputed, ml_engineer):
    response = _client(ml_engineer).get(f"/manage/projects/{disputed.pk}/review/")
    assert response.status_code == 200
    assert _set_ids(response) == [disputed.split.pk]
    assert "Kendall's W is below 0.30 here." in response.content.decode()
    (row,) = response.context["rows"]
    assert (row["kendall_w"], row["rankings"], row["required"], row["confidence"]) == (0.0, 2, 2, 0.0)
    page = _client(ml_engineer).get(f"/manage/projects/{disputed.pk}/review/?state=accepted")
    assert _set_ids(page) == [] and "Nothing here." in page.content.decode()


def test_set_review_page_shows_every_ranking_side_by_side(disputed, ml_engineer):
    split = disputed.split
    response = _client(ml_engineer).get(f"/manage/projects/{disputed.pk}/review/{split.pk}/")
    assert response.status_code == 200
    detail = response.context["detail"]
    assert [row["letter"] for row in detail["rows"]] == ["A", "B", "C"]
    assert [[cell["rank"] for cell in row["cells"]] for row in detail["rows"]] == [[1, 3], [2, 2], [3, 1]]
    assert [col["username"] for col in detail["rankings"]] == ["d0", "d1"]
    assert detail["rows"][0]["cells"][0]["score"] == 6 and detail["rows"][2]["cells"][0]["score"] == 2
    assert detail["rows"][2]["cells"][0]["flags"] == ["Makes up facts (hallucination)"]
    assert (detail["percent_agreement"], detail["pairs"], detail["kendall_w"]) == (0.0, 3, 0.0)
    assert detail["consensus"]["order"] == "A = B = C" and detail["consensus"]["confidence"] == 0.0
    page = response.content.decode()
    text = _text(page)
    assert "z invents a date" in page and "4.2s" in page and "1m 05s" in page
    assert "Needs review" in page and "Makes up facts (hallucination)" in page
    assert "Accept this ranking as consensus" not in page  # ML engineers read, admins act
    assert "Kendall's W 0.000" in text and "Percent agreement 0.0% 3 label pairs" in text


def test_accept_a_ranking_as_consensus(disputed, admin_user):
    split = disputed.split
    second = disputed.rankings[1]
    response = _client(admin_user).post(
        f"/manage/projects/{disputed.pk}/review/{split.pk}/accept/", {"ranking_id": second.pk}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert f"d1&#x27;s ranking is now the consensus of set {split.pk}." in response.content.decode()
    consensus = ResponseSetConsensus.objects.get(response_set=split)
    assert (consensus.ranks, consensus.source, consensus.accepted_ranking_id, consensus.confidence) == (
        second.ranks,
        ConsensusSource.REVIEW,
        second.pk,
        1.0,
    )
    split.refresh_from_db()
    assert split.review_state == ReviewState.ACCEPTED and not split.is_gold
    assert response.context["detail"]["consensus"]["order"] == "C > B > A"


def test_ask_for_one_more_label(disputed, admin_user):
    split = disputed.split
    split.refresh_from_db()
    assert split.status == ResponseSetStatus.COMPLETE
    response = _client(admin_user).post(f"/manage/projects/{disputed.pk}/review/{split.pk}/more-labels/")
    assert response.status_code == 302 and response["Location"] == f"/manage/projects/{disputed.pk}/review/{split.pk}/"
    split.refresh_from_db()
    assert (split.required_count, split.status, split.completed_at, split.review_state) == (
        3,
        ResponseSetStatus.OPEN,
        None,
        ReviewState.MORE_LABELS,
    )
    assert ResponseSet.objects.get(pk=disputed.agreed.pk).required_count == 2


def test_make_gold_with_a_chosen_ranking_or_a_confident_consensus(disputed, admin_user):
    split = disputed.split
    client = _client(admin_user)
    url = f"/manage/projects/{disputed.pk}/review/{split.pk}/gold/"
    # The model consensus of a split set is a three-way tie with confidence 0: refused, nothing changes.
    response = client.post(url, {"ranking_id": "consensus"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "ranks: the consensus confidence 0.00 is below 0.70; give a reference ranking." in response.content.decode()
    split.refresh_from_db()
    assert not split.is_gold and split.gold_ranks is None

    first = disputed.rankings[0]
    response = client.post(url, {"ranking_id": first.pk}, HTTP_HX_REQUEST="true")
    assert f"Set {split.pk} is gold, with the chosen ranking as the reference." in response.content.decode()
    split.refresh_from_db()
    assert split.is_gold and split.gold_ranks == first.ranks
    assert response.context["detail"]["gold_order"] == "A > B > C"

    agreed = disputed.agreed
    response = client.post(f"/manage/projects/{disputed.pk}/review/{agreed.pk}/gold/", {"ranking_id": "consensus"})
    assert response.status_code == 302
    agreed.refresh_from_db()
    assert agreed.is_gold and agreed.gold_ranks == ResponseSetConsensus.objects.get(response_set=agreed).ranks
    assert sorted(agreed.gold_ranks.values()) == [1, 2, 3]


def test_review_actions_refuse_rankings_of_other_sets_and_ml_engineers(disputed, admin_user, ml_engineer):
    split = disputed.split
    other = Ranking.objects.filter(response_set=disputed.agreed).first()
    response = _client(admin_user).post(
        f"/manage/projects/{disputed.pk}/review/{split.pk}/accept/", {"ranking_id": other.pk}, HTTP_HX_REQUEST="true"
    )
    assert f"ranking_id: no ranking {other.pk} on set {split.pk}." in response.content.decode()
    assert not ResponseSetConsensus.objects.filter(response_set=split, source=ConsensusSource.REVIEW).exists()
    response = _client(ml_engineer).post(
        f"/manage/projects/{disputed.pk}/review/{split.pk}/accept/", {"ranking_id": disputed.rankings[0].pk}
    )
    assert response.status_code == 403
    assert "Only admins use this page." in response.content.decode()
    assert _client(admin_user).post(f"/manage/projects/{disputed.pk}/review/{split.pk}/nope/").status_code == 404
    assert _client(admin_user).get(f"/manage/projects/{disputed.pk}/review/999999/").status_code == 404


def test_override_lets_an_auto_paused_labeler_back_in(worked, admin_user):
    l2 = worked.labelers[2]
    user_update(
        user=l2, status=LabelerStatus.PAUSED, status_reason=f"{AUTO_PAUSE_PREFIX} reliability 0.40 is low.", actor=None
    )
    LabelerQuality.objects.filter(project=worked, labeler=l2).update(qualification=QualificationState.FAILED)
    client = _client(admin_user)
    page = client.get(f"/manage/projects/{worked.pk}/quality/").content.decode()
    assert page.count("Let back in") == 1
    assert f'hx-post="/manage/projects/{worked.pk}/quality/labelers/{l2.pk}/override/"' in page

    url = f"/manage/projects/{worked.pk}/quality/labelers/{l2.pk}/override/"
    response = client.post(url, {"override": "1"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    row = response.content.decode()
    assert row.startswith(f'<tr id="labeler-{l2.pk}">')
    assert "l2 may work on &#x27;Worked&#x27; again." in row and "Withdraw override" in row
    l2.profile.refresh_from_db()
    assert (l2.profile.status, l2.profile.status_reason) == (LabelerStatus.ACTIVE, "")
    assert LabelerQuality.objects.get(project=worked, labeler=l2).override is True

    response = client.post(url, {"override": "0"})
    assert response.status_code == 302
    assert LabelerQuality.objects.get(project=worked, labeler=l2).override is False
    l2.profile.refresh_from_db()
    assert l2.profile.status == LabelerStatus.ACTIVE


def test_ml_engineers_cannot_override(worked, ml_engineer):
    l2 = worked.labelers[2]
    response = _client(ml_engineer).post(
        f"/manage/projects/{worked.pk}/quality/labelers/{l2.pk}/override/", {"override": "1"}
    )
    assert response.status_code == 403
    assert LabelerQuality.objects.get(project=worked, labeler=l2).override is False


def test_csv_link_downloads_with_the_browser_session(worked, ml_engineer):
    response = _client(ml_engineer).get(f"/api/v1/projects/{worked.pk}/agreement/by_tag.csv")
    assert response.status_code == 200
    assert response.content.decode().splitlines() == [
        "tag,percent_agreement,pairs,sets",
        "code,0.666667,3,1",
        "math,0.583333,12,2",
    ]
