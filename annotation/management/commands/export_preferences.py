from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.export import EXPORT_MODES, preferences_export_dataset, preferences_export_jsonl
from annotation.management.commands._util import project_from_arg
from config.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Export a project's preferences in trl's format: JSONL (file or stdout) or a datasets dataset."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument("--out", type=Path, help="JSONL file or dataset directory (JSONL: default stdout)")
        parser.add_argument("--format", choices=["jsonl", "dataset"], default="jsonl")
        parser.add_argument("--split", choices=["train", "val", "test"])
        parser.add_argument("--drop-ties", action="store_true")
        parser.add_argument("--mode", choices=EXPORT_MODES, default="annotator")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_arg(options["project"])
        kwargs = {"split": options["split"], "drop_ties": options["drop_ties"], "mode": options["mode"]}
        try:
            if options["format"] == "dataset":
                if options["out"] is None:
                    raise CommandError("--out: a directory is needed for --format dataset.")
                rows = preferences_export_dataset(project=project, path=options["out"], **kwargs)
                self.stderr.write(f"Wrote {rows} rows to {options['out']} (datasets.load_from_disk).")
                return
            out = options["out"].open("w", encoding="utf-8") if options["out"] else sys.stdout
            rows = 0
            try:
                for line in preferences_export_jsonl(project=project, **kwargs):
                    out.write(line)
                    rows += 1
            finally:
                if out is not sys.stdout:
                    out.close()
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(f"Wrote {rows} rows.")
