from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.management.commands._util import project_from_arg
from annotation.services import prompts_import
from config.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Import prompts and responses (JSONL or CSV) into a project; all rows or none."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file extension")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_arg(options["project"])
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"file: {path} does not exist.")
        fmt = options["format"] or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
        try:
            summary = prompts_import(project=project, content=path.read_bytes(), fmt=fmt)
        except ApplicationError as exc:
            for error in exc.errors:
                field = f" {error['field']}" if error.get("field") else ""
                self.stderr.write(f"{path}:{error.get('line', '?')}:{field}: {error['message']}")
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Imported {summary.prompts} prompts, {summary.responses} responses, "
            f"{summary.response_sets} response sets into '{project.name}'."
        )
