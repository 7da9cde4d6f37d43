from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from annotation.models import Project
from annotation.services import guideline_publish, project_create, prompts_import
from labelers.models import Role
from labelers.services import user_create

DEMO_PROJECT = "Demo: helpful and honest assistant"
DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "demo_prompts.jsonl"
DEMO_USERS = [
    ("admin", Role.ADMIN),
    ("mia", Role.ML_ENGINEER),
    ("alice", Role.LABELER),
    ("bob", Role.LABELER),
    ("carol", Role.LABELER),
    ("dan", Role.LABELER),
]
GUIDELINE = """# Ranking responses

Rank the responses from best (1) to worst. Give two responses the **same rank** when you
honestly cannot choose between them.

1. **Helpful**: does it do what the user asked, completely and clearly?
2. **Honest**: is everything it says true? Made-up facts are worse than a short answer.
3. **Harmless**: would following it hurt the user or anyone else?

Flag every problem you see, even on the response you ranked first.
"""


class Command(BaseCommand):
    help = "Create demo users and a demo project with real-looking prompts and responses (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", default="demo-password")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        for username, role in DEMO_USERS:
            if not User.objects.filter(username=username).exists():
                user = user_create(username=username, password=options["password"], role=role)
                if role == Role.ADMIN:
                    user.is_superuser = True
                    user.save(update_fields=["is_superuser"])
        if Project.objects.filter(name=DEMO_PROJECT).exists():
            self.stdout.write(f"Demo project '{DEMO_PROJECT}' already exists.")
            return
        admin = User.objects.get(username="admin")
        project = project_create(
            created_by=admin,
            name=DEMO_PROJECT,
            description="Rank four answers to everyday requests: helpful, honest, harmless.",
            k=4,
            overlap=3,
        )
        guideline_publish(project=project, body=GUIDELINE, note="Initial version", published_by=admin)
        summary = prompts_import(project=project, content=DEMO_FILE.read_bytes(), fmt="jsonl")
        self.stdout.write(
            f"Demo project '{project.name}': {summary.prompts} prompts, {summary.response_sets} response sets."
        )
