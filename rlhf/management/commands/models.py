from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.management.commands._util import project_from_arg
from config.exceptions import ApplicationError
from labelers.types import AuthUser
from rlhf.models import ModelKind, ModelVersion
from rlhf.services.registry import model_version_promote, model_version_register, model_version_rollback

BY_HELP = (
    "the username of the person deciding: the audit trail records them as the one who promoted or "
    "rolled back (the command line is not 'the loop')"
)


class Command(BaseCommand):
    help = (
        "The model registry: list, register, promote, roll back. A promotion or a rollback is a person's "
        "decision: --by USERNAME names them on the audit trail."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list")
        listing.add_argument("project")
        register = sub.add_parser("register")
        register.add_argument("project")
        register.add_argument("--kind", choices=ModelKind.values, required=True)
        register.add_argument("--name", required=True)
        register.add_argument("--path", required=True, help="local directory or hub id")
        register.add_argument("--reference", action="store_true", help="the SFT model: PPO's KL reference")
        register.add_argument("--promote", action="store_true")
        register.add_argument("--by", metavar="USERNAME", help=f"with --promote: {BY_HELP}")
        register.add_argument(
            "--trust-remote-code",
            action="store_true",
            help="let loading this model run the code it ships with (only for models you have reviewed)",
        )
        promote = sub.add_parser("promote")
        promote.add_argument("version_id", type=int)
        promote.add_argument("--by", metavar="USERNAME", required=True, help=BY_HELP)
        rollback = sub.add_parser("rollback")
        rollback.add_argument("project")
        rollback.add_argument("--kind", choices=ModelKind.values, required=True)
        rollback.add_argument("--by", metavar="USERNAME", required=True, help=BY_HELP)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc

    def _list(self, options: dict[str, Any]) -> None:
        project = project_from_arg(options["project"])
        for v in ModelVersion.objects.filter(project=project).order_by("kind", "-created_at"):
            flag = " (reference)" if v.is_reference else ""
            self.stdout.write(f"{v.pk:>5}  {v.kind:<7} {v.state:<10} {v.name}{flag}  {v.path}")

    def _actor(self, username: str | None) -> AuthUser:
        """The active user named by ``--by``."""
        if not username:
            raise CommandError("--by: give the username of the person who promotes it.")
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"--by: no active user '{username}'.")
        return user

    def _register(self, options: dict[str, Any]) -> None:
        actor = self._actor(options["by"]) if options["promote"] else None
        version = model_version_register(
            project=project_from_arg(options["project"]),
            kind=options["kind"],
            name=options["name"],
            path=options["path"],
            is_reference=options["reference"],
            promote=options["promote"],
            trust_remote_code=options["trust_remote_code"],
            actor=actor,
        )
        self.stdout.write(f"Registered model version {version.pk} ({version.state}).")

    def _promote(self, options: dict[str, Any]) -> None:
        actor = self._actor(options["by"])
        version = ModelVersion.objects.filter(pk=options["version_id"]).first()
        if version is None:
            raise CommandError(f"version_id: no model version {options['version_id']}.")
        model_version_promote(version=version, actor=actor, reason="models promote (management command)")
        self.stdout.write(f"Promoted {version.name}.")

    def _rollback(self, options: dict[str, Any]) -> None:
        actor = self._actor(options["by"])
        version = model_version_rollback(
            project=project_from_arg(options["project"]),
            kind=options["kind"],
            actor=actor,
            reason="models rollback (management command)",
        )
        self.stdout.write(f"Rolled back: {version.name} is promoted again.")
