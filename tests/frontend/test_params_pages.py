"""Ids in page query strings: a non-ASCII digit such as '²' is an error page naming the parameter, not a 500."""

from __future__ import annotations

import html

import pytest
from django.test import Client

from annotation.services import guideline_publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(ml_engineer) -> Client:
    client = Client()
    client.force_login(ml_engineer)
    return client


def test_guideline_against_a_non_ascii_digit_is_a_400(browser, admin_user, project):
    guideline_publish(project=project, body="line one", published_by=admin_user)
    guideline_publish(project=project, body="line 1", published_by=admin_user)
    response = browser.get(f"/manage/projects/{project.pk}/guidelines/2/", {"against": "\u00b2"})
    assert response.status_code == 400
    assert "against: expected a guideline version number, got '\u00b2'." in html.unescape(response.content.decode())
    response = browser.get(f"/manage/projects/{project.pk}/guidelines/2/", {"against": "1"})
    assert response.status_code == 200 and response.context["against"].version == 1


def test_compare_page_with_a_non_ascii_digit_is_a_400(browser, project):
    response = browser.get(f"/manage/projects/{project.pk}/compare/", {"a": "\u00b2", "b": "1"})
    assert response.status_code == 400
    assert "a: expected a model version id, got '\u00b2'." in html.unescape(response.content.decode())
