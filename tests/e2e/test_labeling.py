"""A labeler in real Chromium: guideline, keyboard and drag ranking, skip, drafts, safety, overlap."""

from __future__ import annotations

import pytest

from annotation.models import Assignment, AssignmentStatus, Ranking, ResponseSet
from annotation.services import guideline_publish
from labelers.models import Role
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, UserFactory, response_set_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@pytest.fixture
def setup():
    admin = UserFactory(username="ada", role=Role.ADMIN)
    lena = UserFactory(username="lena", role=Role.LABELER)
    project = ProjectFactory(name="Helpfulness", k=4, overlap=2)
    guideline_publish(project=project, body="# Rules\n\nPrefer **helpful** and honest answers.", published_by=admin)
    return project, lena, admin


def _current(page) -> Assignment:
    assignment_id = int(page.get_attribute("#item", "data-assignment-id"))
    return Assignment.objects.get(pk=assignment_id)


def _card(page, response_id: int):
    return page.locator(f'#item .card[data-response-id="{response_id}"]')


def _wait_next(page, previous_id: int) -> None:
    page.wait_for_function(
        "prev => document.getElementById('item')?.dataset.assignmentId !== String(prev)",
        arg=previous_id,
    )


def test_keyboard_ranking_with_a_tie_then_next_item(setup, new_page, shot):
    project, lena, _ = setup
    first = response_set_create(project=project, texts=["Alpha answer", XSS, "```python\nprint('hi')\n```", "Delta"])
    response_set_create(project=project)
    page = new_page()
    log_in(page, "lena")
    page.goto(f"/work/{project.pk}/")
    assert page.url.endswith(f"/work/{project.pk}/guideline/")
    page.wait_for_selector("#ack-required")
    shot(page, "guideline")
    page.keyboard.press("Enter")  # the acknowledge button has the focus
    page.wait_for_selector("#item-data", state="attached")
    assignment = _current(page)
    assert assignment.response_set_id == first.pk
    shot(page, "ranking")

    # A response holding <script> shows as text and runs nothing.
    xss_card = next(pk for pk in assignment.display_order if "__pwned" in first.prompt.responses.get(pk=pk).text)
    assert "<script>window.__pwned = 1</script>" in _card(page, xss_card).inner_text()
    assert page.evaluate("window.__pwned === undefined")

    a, b, c, d = (int(pk) for pk in assignment.display_order)
    _card(page, a).focus()
    page.keyboard.press("1")  # focus moves on to the next card
    page.keyboard.press("1")  # same number: a tie
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    assert page.inner_text("#item-error") == "Rank every response before you submit: D has no rank yet."
    page.keyboard.press("3")
    assert page.locator('.rank-row[data-rank="1"] .chip').all_inner_texts() == ["A", "B"]
    assert "tie" in page.get_attribute('.rank-row[data-rank="1"]', "class")
    _card(page, a).focus()
    page.keyboard.press("Shift+Digit6")
    page.fill("#comment", "B and A are equally good.")
    page.keyboard.press("Control+Enter")
    _wait_next(page, assignment.pk)
    shot(page, "next-item")

    ranking = Ranking.objects.get(labeler=lena)
    assert ranking.ranks == {str(a): 1, str(b): 1, str(c): 2, str(d): 3}
    assert ranking.scores == {str(a): 6}
    assert ranking.comment == "B and A are equally good."
    assert ranking.comparisons.count() == 6 and ranking.comparisons.filter(outcome="tie").count() == 1
    assert _current(page).response_set_id != first.pk
    assert page.inner_text("#done-today") == "1"


def test_drag_and_drop_ranking(setup, new_page, shot):
    project, lena, _ = setup
    response_set_create(project=project)
    page = new_page()
    log_in(page, "lena")
    page.goto(f"/work/{project.pk}/guideline/")
    page.click("#acknowledge")
    page.wait_for_selector("#item-data", state="attached")
    assignment = _current(page)
    a, b, c, d = (int(pk) for pk in assignment.display_order)
    for response_id, rank in ((d, 1), (a, 2), (b, 2), (c, 3)):
        _card(page, response_id).drag_to(page.locator(f'.rank-row[data-rank="{rank}"]'))
    assert page.locator('.rank-row[data-rank="2"] .chip').all_inner_texts() == ["A", "B"]
    # A chip dragged from one row to another moves.
    page.locator('.rank-row[data-rank="3"] .chip').drag_to(page.locator('.rank-row[data-rank="4"]'))
    shot(page, "dragged")
    page.click("#submit")
    page.wait_for_selector("#no-more-work")
    shot(page, "no-more-work")
    assert Ranking.objects.get(labeler=lena).ranks == {str(d): 1, str(a): 2, str(b): 2, str(c): 3}


def test_skip_with_a_reason(setup, new_page, shot):
    project, _, _ = setup
    response_set_create(project=project)
    page = new_page()
    log_in(page, "lena")
    page.goto(f"/work/{project.pk}/guideline/")
    page.click("#acknowledge")
    page.wait_for_selector("#item-data", state="attached")
    assignment = _current(page)
    page.keyboard.press("s")
    page.wait_for_selector("#skip-dialog[open]")
    page.click("#skip-form button[type=submit]")
    assert page.inner_text("#skip-error") == "Choose a reason or write one."
    page.check("input[name=reason][value=other]")
    page.fill("input[name=other]", "Needs medical knowledge")
    shot(page, "skip-dialog")
    page.click("#skip-form button[type=submit]")
    page.wait_for_selector("#no-more-work")
    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.SKIPPED and assignment.skip_reason == "Needs medical knowledge"


def test_reload_mid_ranking_keeps_the_draft_and_submits_once(setup, new_page, shot):
    project, lena, _ = setup
    response_set_create(project=project)
    page = new_page()
    log_in(page, "lena")
    page.goto(f"/work/{project.pk}/guideline/")
    page.click("#acknowledge")
    page.wait_for_selector("#item-data", state="attached")
    assignment = _current(page)
    a, b, c, d = (int(pk) for pk in assignment.display_order)
    _card(page, a).focus()
    for key in ("2", "1", "4"):
        page.keyboard.press(key)
    _card(page, b).locator("input[type=radio][value='3']").check()
    page.fill("#comment", "half done")
    page.reload()
    page.wait_for_selector("#item-data", state="attached")
    assert _current(page).pk == assignment.pk
    assert page.inner_text("#item-status") == "Your draft of this item was restored."
    assert page.locator('.rank-row[data-rank="4"] .chip').all_inner_texts() == ["C"]
    assert _card(page, b).locator("input[type=radio][value='3']").is_checked()
    assert page.input_value("#comment") == "half done"
    shot(page, "restored")
    _card(page, d).focus()
    page.keyboard.press("3")
    page.dblclick("#submit")  # a double click submits once
    page.wait_for_selector("#no-more-work")
    ranking = Ranking.objects.get(labeler=lena)
    assert ranking.ranks == {str(a): 2, str(b): 1, str(c): 4, str(d): 3}
    assert ranking.scores == {str(b): 3} and ranking.comment == "half done"


def test_expired_session_logs_in_again_and_sends_the_work(setup, new_page, shot):
    project, lena, _ = setup
    response_set_create(project=project)
    page = new_page()
    log_in(page, "lena")
    page.goto(f"/work/{project.pk}/guideline/")
    page.click("#acknowledge")
    page.wait_for_selector("#item-data", state="attached")
    assignment = _current(page)
    _card(page, int(assignment.display_order[0])).focus()
    for key in ("1", "2", "3", "4"):
        page.keyboard.press(key)
    page.context.clear_cookies()
    page.keyboard.press("Enter")
    page.wait_for_selector("#login-dialog[open]")
    shot(page, "login-again")
    page.fill("#login-form input[name=password]", "correct-horse-battery")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#no-more-work")
    assert Ranking.objects.filter(labeler=lena).count() == 1


def test_lost_connection_resends_when_back(setup, new_page):
    project, lena, _ = setup
    response_set_create(project=project)
    page = new_page()
    log_in(page, "lena")
    page.goto(f"/work/{project.pk}/guideline/")
    page.click("#acknowledge")
    page.wait_for_selector("#item-data", state="attached")
    assignment = _current(page)
    _card(page, int(assignment.display_order[0])).focus()
    for key in ("1", "2", "3", "4"):
        page.keyboard.press(key)
    page.context.set_offline(True)
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('item-status').textContent.startsWith('Connection lost')")
    assert not Ranking.objects.exists()
    page.context.set_offline(False)
    page.wait_for_selector("#no-more-work")
    assert Ranking.objects.filter(labeler=lena).count() == 1


def test_pairwise_choice_by_key(new_page):
    UserFactory(username="lena", role=Role.LABELER)
    project = ProjectFactory(name="Pairs", k=2, overlap=1, task_mode="pairwise")
    response_set_create(project=project)
    page = new_page()
    log_in(page, "lena")
    page.goto(f"/work/{project.pk}/")
    page.wait_for_selector("#item-data", state="attached")
    page.keyboard.press("t")
    assert page.get_attribute('.choice[data-choice="tie"]', "aria-pressed") == "true"
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.wait_for_selector("#no-more-work")
    assert Ranking.objects.get().pairwise_choice == "b"


def test_two_labelers_in_two_browsers_never_exceed_the_overlap(new_page):
    for name in ("lena", "otto"):
        UserFactory(username=name, role=Role.LABELER)
    project = ProjectFactory(name="Overlap", k=2, overlap=1)
    sets = [response_set_create(project=project) for _ in range(3)]
    pages = {}
    for name in ("lena", "otto"):
        pages[name] = new_page()
        log_in(pages[name], name)
        pages[name].goto(f"/work/{project.pk}/")
        pages[name].wait_for_selector("#item-data", state="attached")
    leased = {name: _current(page).response_set_id for name, page in pages.items()}
    assert leased["lena"] != leased["otto"]
    for _ in range(3):
        for page in pages.values():
            if page.locator("#no-more-work").count():
                continue
            previous = _current(page).pk
            _card(page, int(_current(page).display_order[0])).focus()
            page.keyboard.press("1")
            page.keyboard.press("2")
            page.keyboard.press("Enter")
            _wait_next(page, previous)
    for page in pages.values():
        page.wait_for_selector("#no-more-work")
    counts = {rs.pk: rs.submitted_count for rs in ResponseSet.objects.filter(pk__in=[s.pk for s in sets])}
    assert counts == {s.pk: 1 for s in sets}
    assert Ranking.objects.count() == 3


def test_admin_publishes_a_new_version_and_the_labeler_is_stopped(setup, new_page, shot):
    project, lena, _ = setup
    response_set_create(project=project)
    response_set_create(project=project)
    labeler_page = new_page()
    log_in(labeler_page, "lena")
    labeler_page.goto(f"/work/{project.pk}/guideline/")
    labeler_page.click("#acknowledge")
    labeler_page.wait_for_selector("#item-data", state="attached")
    assignment = _current(labeler_page)

    admin_page = new_page()
    log_in(admin_page, "ada")
    admin_page.goto(f"/manage/projects/{project.pk}/guidelines/")
    admin_page.fill("#id_body", "# Rules\n\nPrefer **honest** answers, then helpful ones.")
    admin_page.wait_for_function(
        "() => document.getElementById('guideline-preview').innerHTML.includes('<strong>honest</strong>')"
    )
    admin_page.fill("#id_note", "Honesty first")
    shot(admin_page, "guideline-editor")
    admin_page.click("#guideline-form button[type=submit]")
    admin_page.wait_for_selector("text=Version 2 published")
    admin_page.click("text=diff with v1")
    assert "Prefer **honest** answers, then helpful ones." in admin_page.inner_text(".diff .add")
    shot(admin_page, "guideline-diff")

    _card(labeler_page, int(assignment.display_order[0])).focus()
    for key in ("1", "2", "3", "4"):
        labeler_page.keyboard.press(key)
    labeler_page.keyboard.press("Enter")
    labeler_page.wait_for_url(f"**/work/{project.pk}/guideline/")
    assert "guideline version 2" in labeler_page.inner_text("h1")
    assert labeler_page.locator("#ack-required").is_visible()
    assert Ranking.objects.get(labeler=lena).guideline.version == 1
    labeler_page.click("#acknowledge")
    labeler_page.wait_for_selector("#item-data", state="attached")
    assert _current(labeler_page).guideline.version == 2
