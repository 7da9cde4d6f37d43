from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

import annotation
from annotation.models import Project
from annotation.services import guideline_publish, project_create, prompts_import
from labelers.models import Role
from labelers.services import user_create

DEMO_PROJECT = "Demo: helpful and honest assistant"
DEMO_FILE = Path(annotation.__file__).resolve().parent / "demo" / "demo_prompts.jsonl"
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
        parser.add_argument(
            "--no-models", action="store_true", help="skip training the demo SFT policy and the loop settings"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = self._data(options)
        if not options["no_models"]:
            self._models(project)

    def _models(self, project: Project) -> None:
        """Train the tiny demo SFT policy once (a few CPU minutes), register it as the promoted
        policy and KL reference, and set the loop to tiny CPU-sized runs."""
        from django.conf import settings

        from rlhf.models import LoopSettings, ModelVersion
        from rlhf.services import model_version_register

        if ModelVersion.objects.filter(project=project, is_reference=True).exists():
            return
        path = Path(settings.ARTIFACTS_ROOT) / "demo-sft"
        if not (path / "config.json").exists():
            from rlhf.training.tiny import train_demo_sft

            self.stdout.write("Training the demo SFT policy on the bundled instructions (once; a few CPU minutes)...")
            result = train_demo_sft(path, epochs=20)
            self.stdout.write(f"  done in {result['seconds']:.0f} s, loss {result['loss']:.2f}")
        # The demo's set-up, not a person's decision: the audit trail shows it as the loop's.
        model_version_register(
            project=project, kind="policy", name="demo-sft", path=str(path), is_reference=True, promote=True, actor=None
        )
        LoopSettings.objects.update_or_create(
            project=project,
            defaults={
                "retrain_min_comparisons": 24,
                "reward_min_accuracy": 0.5,
                "ppo_max_kl": 50.0,
                # The demo shows a whole round on a laptop; the evaluation is still recorded on the run.
                "ppo_require_improvement": False,
                "generate_prompts": 8,
                # One length for the answers labelers rank and the PPO rollouts.
                "max_response_tokens": 48,
                "reward_config": {
                    "learning_rate": 5e-4,
                    "num_epochs": 2.0,
                    "max_length": 256,
                    "model": {"device": "cpu"},
                },
                "ppo_config": {
                    "total_episodes": 64,
                    "batch_size": 16,
                    "mini_batch_size": 8,
                    "num_ppo_epochs": 2,
                    "learning_rate": 5e-5,
                    "device": "cpu",
                },
                "generation_config": {
                    "temperature": 0.9,
                    "top_p": 0.9,
                    "model": {"device": "cpu"},
                },
            },
        )
        # Prompts in the style the tiny policy was trained on, with no responses yet: the first
        # "generate" run writes K answers to each, which become the next response sets.
        from rlhf.training.tiny import load_corpus

        rows = [
            {
                "external_id": f"corpus-{index:03d}",
                "prompt": row["instruction"],
                "tags": [row["tag"]],
                "split": "val" if index % 50 == 0 else "train",
            }
            for index, row in enumerate(load_corpus())
            if index % 10 == 0
        ]
        prompts_import(project=project, content="\n".join(json.dumps(row) for row in rows), fmt="jsonl")
        self.stdout.write(
            f"Demo SFT policy registered with {len(rows)} prompts for it to answer; "
            "the loop retrains after 24 new comparisons."
        )

    @transaction.atomic
    def _data(self, options: dict[str, Any]) -> Project:
        User = get_user_model()
        for username, role in DEMO_USERS:
            if not User.objects.filter(username=username).exists():
                user = user_create(username=username, password=options["password"], role=role)
                if role == Role.ADMIN:
                    user.is_superuser = True
                    user.save(update_fields=["is_superuser"])
        existing = Project.objects.filter(name=DEMO_PROJECT).first()
        if existing is not None:
            self.stdout.write(f"Demo project '{DEMO_PROJECT}' already exists.")
            return existing
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
        return project
