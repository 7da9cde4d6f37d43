"""parse_id: the one place that turns a query-string or command-line id into an int."""

from __future__ import annotations

import pytest
from django.core.management.base import CommandError

from annotation.management.commands._util import project_from_arg
from annotation.params import parse_id
from tests.factories import ProjectFactory


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12),
        ("0", 0),
        ("\u00b2", None),
        ("\u0663", None),
        ("", None),
        ("-1", None),
        (" 1", None),
        ("1\n", None),
        (None, None),
    ],
)
def test_parse_id_takes_ascii_digits_only(value, expected):
    assert parse_id(value) == expected


@pytest.mark.django_db
def test_project_from_arg_takes_an_id_or_a_name_and_refuses_a_non_ascii_digit():
    project = ProjectFactory(name="Poems")
    assert project_from_arg(str(project.pk)) == project
    assert project_from_arg("Poems") == project
    with pytest.raises(CommandError) as exc:
        project_from_arg("\u00b2")
    assert str(exc.value) == "project: no project with id or name '\u00b2'."
