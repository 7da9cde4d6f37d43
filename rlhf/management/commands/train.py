from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.management.commands._util import project_from_arg
from config.exceptions import ApplicationError
from rlhf.models import RunKind, TrainingRun
from rlhf.records import RunSummary
from rlhf.services.loop import training_run_execute
from rlhf.services.runs import training_run_start


class Command(BaseCommand):
    help = (
        "Start a training run (generate, reward or ppo) and follow it with a progress bar. By default a "
        "worker on the gpu queue runs it; --here runs it in this process."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument("--kind", choices=RunKind.values, required=True)
        parser.add_argument("--config", default="{}", help="JSON overrides of the run's config")
        parser.add_argument("--here", action="store_true", help="run in this process instead of on a worker")
        parser.add_argument("--no-follow", action="store_true", help="queue it and return")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_arg(options["project"])
        try:
            overrides = json.loads(options["config"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config: not valid JSON ({exc.msg}).") from exc
        if options["here"]:
            # No message for a worker: this process runs the run itself.
            run = self._start(project, options["kind"], overrides, enqueue=False)
            self.stdout.write(f"Run {run.pk} ({run.kind}) running here.")
            run = training_run_execute(run_id=run.pk)
            self._report(run)
            return
        run = self._start(project, options["kind"], overrides, enqueue=True)
        self.stdout.write(f"Queued run {run.pk} ({run.kind}) on the gpu queue.")
        if not options["no_follow"]:
            self._follow(run)

    def _start(self, project: Any, kind: str, overrides: dict[str, Any], *, enqueue: bool) -> TrainingRun:
        try:
            return training_run_start(project=project, kind=kind, config=overrides, enqueue=enqueue)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc

    def _follow(self, run: TrainingRun) -> None:
        from tqdm import tqdm

        with tqdm(total=1, desc=f"{run.kind} run {run.pk}", unit="step", file=self.stdout) as bar:
            while True:
                run.refresh_from_db()
                if run.progress_total and bar.total != run.progress_total:
                    bar.total = run.progress_total
                bar.n = run.progress_step
                bar.set_postfix_str(run.status)
                bar.refresh()
                if run.is_finished:
                    break
                time.sleep(1)
        self._report(run)

    def _report(self, run: TrainingRun) -> None:
        run.refresh_from_db()
        if run.status != "succeeded":
            raise CommandError(f"Run {run.pk} {run.status}: {run.error.strip().splitlines()[-1] if run.error else ''}")
        summary = RunSummary.from_json(run.kind, run.summary)
        version = f", model version {run.output_version_id}" if run.output_version_id else ""
        self.stdout.write(f"Run {run.pk} succeeded{version}. Evaluation: {json.dumps(summary.evaluation, default=str)}")
        if summary.gate is not None:
            self.stdout.write(summary.gate.reason)
