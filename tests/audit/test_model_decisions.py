"""Promotions and rollbacks name who decided: a person on the command line (``--by``), the loop
otherwise; the Django admin cannot change which version is current, nor a person's role or status,
behind the services' back."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEntry
from labelers.models import LabelerProfile, Role
from rlhf.models import ModelKind, ModelState, ModelVersion
from rlhf.services.registry import model_version_register
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def _rows() -> list[tuple]:
    return list(
        AuditEntry.objects.order_by("id").values_list("actor_name", "action", "target", "reason", "before", "after")
    )


@pytest.fixture
def two_policies(tiny_models):
    project = ProjectFactory()
    sft = model_version_register(
        project=project, kind=ModelKind.POLICY, name="sft", path=tiny_models["policy"], is_reference=True, actor=None
    )
    ppo = model_version_register(
        project=project, kind=ModelKind.POLICY, name="ppo-1", path=tiny_models["policy"], actor=None
    )
    return project, sft, ppo


def test_the_command_line_records_who_promoted_and_rolled_back(ml_engineer, two_policies, capsys):
    project, sft, ppo = two_policies
    call_command("models", "promote", str(sft.pk), "--by", "emil")
    call_command("models", "promote", str(ppo.pk), "--by", "emil")
    call_command("models", "rollback", str(project.pk), "--kind", "policy", "--by", "emil")
    assert capsys.readouterr().out.splitlines()[-1] == "Rolled back: sft is promoted again."
    sft_ref, ppo_ref = {"version": sft.pk, "name": "sft"}, {"version": ppo.pk, "name": "ppo-1"}
    assert _rows() == [
        ("emil", "model.promote", f"rlhf.modelversion:{sft.pk}", "models promote (management command)", {}, sft_ref),
        (
            "emil",
            "model.promote",
            f"rlhf.modelversion:{ppo.pk}",
            "models promote (management command)",
            sft_ref,
            ppo_ref,
        ),
        (
            "emil",
            "model.rollback",
            f"rlhf.modelversion:{sft.pk}",
            "models rollback (management command)",
            ppo_ref,
            sft_ref,
        ),
    ]
    assert set(AuditEntry.objects.values_list("actor_id", flat=True)) == {ml_engineer.pk}


def test_the_command_line_refuses_a_promotion_without_a_known_person(ml_engineer, two_policies):
    project, sft, _ = two_policies
    with pytest.raises(CommandError, match=r"^--by: no active user 'nobody'\.$"):
        call_command("models", "promote", str(sft.pk), "--by", "nobody")
    with pytest.raises(CommandError, match="the following arguments are required: --by"):
        call_command("models", "rollback", str(project.pk), "--kind", "policy")
    with pytest.raises(CommandError, match=r"^--by: give the username of the person who promotes it\.$"):
        call_command(
            "models", "register", str(project.pk), "--kind", "policy", "--name", "x", "--path", "/x", "--promote"
        )
    assert (_rows(), ModelVersion.objects.filter(state=ModelState.PROMOTED).count()) == ([], 0)


def test_the_admin_cannot_promote_or_mark_the_reference(admin_user, two_policies, client):
    _, _, ppo = two_policies
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    answer = client.post(
        f"/admin/rlhf/modelversion/{ppo.pk}/change/",
        {
            "project": ppo.project_id,
            "kind": "policy",
            "name": "ppo-renamed",
            "path": ppo.path,
            "notes": "",
            "metrics": "{}",
            "data_snapshot": "{}",
            "parent": "",
            "run": "",
            "state": "promoted",
            "is_reference": "on",
        },
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    ppo.refresh_from_db()
    assert (ppo.name, ppo.state, ppo.is_reference, ppo.promoted_at) == (
        "ppo-renamed",
        ModelState.CANDIDATE,
        False,
        None,
    )
    assert _rows() == []


def test_the_admin_cannot_change_a_role_or_a_status(admin_user, labeler, client):
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    profile = LabelerProfile.objects.get(user=labeler)
    answer = client.post(
        f"/admin/labelers/labelerprofile/{profile.pk}/change/",
        {"user": labeler.pk, "role": Role.ADMIN, "status": "paused", "status_reason": "from the admin"},
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    profile.refresh_from_db()
    assert (profile.role, profile.status, profile.status_reason) == (Role.LABELER, "active", "")
    assert _rows() == []
