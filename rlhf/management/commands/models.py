from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.management.commands._util import project_from_arg
from config.exceptions import ApplicationError
from rlhf.models import ModelKind, ModelVersion
from rlhf.services.registry import model_version_promote, model_version_register, model_version_rollback


class Command(BaseCommand):
    help = "The model registry: list, register, promote, roll back."

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
        register.add_argument(
            "--trust-remote-code",
            action="store_true",
            help="let loading this model run the code it ships with (only for models you have reviewed)",
        )
        promote = sub.add_parser("promote")
        promote.add_argument("version_id", type=int)
        rollback = sub.add_parser("rollback")
        rollback.add_argument("project")
        rollback.add_argument("--kind", choices=ModelKind.values, required=True)

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

    def _register(self, options: dict[str, Any]) -> None:
        version = model_version_register(
            project=project_from_arg(options["project"]),
            kind=options["kind"],
            name=options["name"],
            path=options["path"],
            is_reference=options["reference"],
            promote=options["promote"],
            trust_remote_code=options["trust_remote_code"],
        )
        self.stdout.write(f"Registered model version {version.pk} ({version.state}).")

    def _promote(self, options: dict[str, Any]) -> None:
        version = ModelVersion.objects.filter(pk=options["version_id"]).first()
        if version is None:
            raise CommandError(f"version_id: no model version {options['version_id']}.")
        model_version_promote(version=version, actor=None, reason="models promote (management command)")
        self.stdout.write(f"Promoted {version.name}.")

    def _rollback(self, options: dict[str, Any]) -> None:
        version = model_version_rollback(
            project=project_from_arg(options["project"]),
            kind=options["kind"],
            actor=None,
            reason="models rollback (management command)",
        )
        self.stdout.write(f"Rolled back: {version.name} is promoted again.")
