"""Import prompts and responses from JSONL or CSV: every bad row reported, nothing half-written.

One JSONL line (or CSV row) is one prompt with its responses::

    {"external_id": "p-17", "prompt": "Explain ...", "split": "train", "tags": ["science"],
     "responses": ["first answer", {"text": "second", "origin": "model", "model_version": "sft-v1",
                                     "sampling": {"temperature": 0.7}}]}

``prompt`` may be a string or a list of chat messages (``messages`` is accepted as its alias).
Responses come in groups of K: each group of K becomes one response set. CSV columns:
``external_id, prompt, split, tags`` (tags separated by ``;``), ``messages`` (JSON), and either
``responses`` (a JSON list) or ``response_1 .. response_9``.
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from annotation.models import (
    Project,
    Prompt,
    Response,
    ResponseOrigin,
    ResponseSet,
    ResponseSetItem,
    Split,
)
from annotation.params import parse_id
from annotation.services.text import unstorable_at
from config import jsonsafe
from config.exceptions import ApplicationError, Conflict
from rlhf.models import ModelVersion

MAX_REPORTED_ERRORS = 200
CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ImportSummary:
    prompts: int
    responses: int
    response_sets: int


@dataclass
class _Row:
    line: int
    external_id: str
    text: str
    messages: list[dict[str, str]] | None
    split: str
    tags: list[str]
    metadata: dict[str, Any]
    responses: list[dict[str, Any]]


class _RowErrors(Exception):
    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors


def _decode(content: bytes | str) -> str:
    if isinstance(content, str):
        return content
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise ApplicationError(
            f"line {line}: the file is not valid UTF-8.",
            code="import_invalid",
            errors=[{"line": line, "field": "", "message": "not valid UTF-8"}],
        ) from exc


def _json_loads(raw: str, *, column: bool) -> tuple[Any, str | None]:
    """The parsed value, or why ``raw`` is not JSON we can take (as a row error, never a 500)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at column {exc.colno}" if column else exc.msg
    except ValueError:  # an integer longer than Python converts
        return None, f"a number has more than {sys.get_int_max_str_digits()} digits"
    except RecursionError:
        return None, f"nested deeper than {settings.JSON_MAX_DEPTH} levels"
    # The row checks below walk the value recursively; the limit keeps them (and the write) in bounds.
    if jsonsafe.depth_of(value) > settings.JSON_MAX_DEPTH:
        return None, f"nested deeper than {settings.JSON_MAX_DEPTH} levels"
    return value, None


def _jsonl_records(text: str) -> Iterator[tuple[int, Any, str | None]]:
    # Only \n ends a line: str.splitlines() also splits on U+2028, U+0085 and others that JSON
    # strings may hold raw.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        record, problem = _json_loads(raw.removesuffix("\r"), column=True)
        yield number, record, f"not valid JSON ({problem})" if problem else None


def _csv_problem(exc: csv.Error) -> str:
    message = str(exc)
    if message.startswith("field larger than field limit"):
        return f"a field is longer than {csv.field_size_limit():,} characters"
    if message == "unexpected end of data":
        return 'a quoted field is not closed (unbalanced ") before the end of the file'
    return f"not valid CSV ({message})"


def _csv_records(text: str) -> Iterator[tuple[int, Any, str | None]]:
    # strict: an unbalanced quote is an error, not one field that runs to the end of the file.
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        if not reader.fieldnames:
            return
    except csv.Error as exc:
        yield 1, None, _csv_problem(exc)
        return
    previous_end = reader.line_num
    while True:
        line = previous_end + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the reader cannot go on past this row
            yield line, None, _csv_problem(exc)
            return
        previous_end = reader.line_num
        if None in record:
            yield (
                line,
                None,
                f"has {len(record[None]) + len(reader.fieldnames)} columns, the header has {len(reader.fieldnames)}",
            )
            continue
        row: dict[str, Any] = {}
        for key, value in record.items():
            if key is None or value is None or value == "":
                continue
            row[key.strip()] = value
        problem = None
        for json_field in ("messages", "responses", "metadata"):
            if json_field in row:
                row[json_field], json_problem = _json_loads(row[json_field], column=False)
                if json_problem:
                    problem = f"{json_field}: not valid JSON ({json_problem})"
        if isinstance(row.get("prompt"), str) and row["prompt"].lstrip().startswith("[{"):
            messages, not_json = _json_loads(row["prompt"], column=False)
            if not_json is None:
                row["prompt"] = messages
        if "tags" in row:
            row["tags"] = [tag.strip() for tag in str(row["tags"]).split(";") if tag.strip()]
        numbered = sorted(
            (number, key)
            for key in row
            if key.startswith("response_") and (number := parse_id(key.removeprefix("response_"))) is not None
        )
        if numbered:
            row.setdefault("responses", [])
            if isinstance(row["responses"], list):
                row["responses"].extend(row.pop(key) for _, key in numbered)
        yield line, row, problem


def _parse_messages(value: Any, errors: list[tuple[str, str]], field: str) -> list[dict[str, str]] | None:
    if not isinstance(value, list) or not value:
        errors.append((field, "chat messages must be a non-empty list of {role, content}"))
        return None
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            errors.append((f"{field}[{index}]", "must be an object with 'role' and 'content'"))
            continue
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            errors.append((f"{field}[{index}].role", f"must be one of {', '.join(CHAT_ROLES)}, got {role!r}"))
        if not isinstance(content, str) or not content.strip():
            errors.append((f"{field}[{index}].content", "must be a non-empty string"))
        else:
            _check_length(content, f"{field}[{index}].content", errors)
        messages.append({"role": str(role), "content": str(content)})
    if messages and messages[-1]["role"] != "user":
        errors.append((field, "the last message must be the user's turn"))
    return messages


def _check_length(text: str, field: str, errors: list[tuple[str, str]]) -> bool:
    """Record an error when ``text`` is over IMPORT_MAX_TEXT_CHARS (pages render every stored text)."""
    limit = settings.IMPORT_MAX_TEXT_CHARS
    if len(text) > limit:
        errors.append((field, f"is {len(text):,} characters; at most {limit:,} are accepted"))
        return True
    return False


def _parse_row(record: Any, *, line: int, project: Project, model_versions: dict[str, ModelVersion]) -> _Row:
    errors: list[tuple[str, str]] = []
    if not isinstance(record, dict):
        raise _RowErrors([("", "each line must be a JSON object")])
    known = {"external_id", "id", "prompt", "messages", "split", "tags", "metadata", "responses"}
    for key in record:
        if key not in known:
            errors.append((str(key), "unknown field"))
        elif found := unstorable_at(record[key], str(key)):  # said here rather than fail the whole write
            errors.append(found)
    if errors:
        raise _RowErrors(errors)

    external_id = record.get("external_id", record.get("id"))
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)
    if not isinstance(external_id, str) or not external_id.strip():
        errors.append(("external_id", "is required (a non-empty string)"))
        external_id = ""
    elif len(external_id) > 200:
        errors.append(("external_id", "is longer than 200 characters"))

    text, messages = "", None
    prompt, chat = record.get("prompt"), record.get("messages")
    if prompt is not None and chat is not None:
        errors.append(("prompt", "give either 'prompt' or 'messages', not both"))
    elif isinstance(prompt, str):
        if not prompt.strip():
            errors.append(("prompt", "must not be empty"))
        _check_length(prompt, "prompt", errors)
        text = prompt
    elif isinstance(prompt, list) or chat is not None:
        messages = _parse_messages(
            prompt if prompt is not None else chat, errors, "prompt" if prompt is not None else "messages"
        )
    else:
        errors.append(("prompt", "is required (a string or a list of chat messages)"))

    split = record.get("split", Split.TRAIN)
    if split not in Split.values:
        errors.append(("split", f"must be one of {', '.join(Split.values)}, got {split!r}"))
    tags = record.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) and tag.strip() for tag in tags):
        errors.append(("tags", "must be a list of non-empty strings"))
        tags = []
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        errors.append(("metadata", "must be an object"))
        metadata = {}

    responses: list[dict[str, Any]] = []
    raw_responses = record.get("responses", [])
    if not isinstance(raw_responses, list):
        errors.append(("responses", "must be a list"))
        raw_responses = []
    for index, raw in enumerate(raw_responses):
        field = f"responses[{index}]"
        if isinstance(raw, str):
            raw = {"text": raw}
        if not isinstance(raw, dict):
            errors.append((field, "must be a string or an object with 'text'"))
            continue
        response_text = raw.get("text")
        if not isinstance(response_text, str) or not response_text.strip():
            errors.append((f"{field}.text", "must be a non-empty string"))
            continue
        if _check_length(response_text, f"{field}.text", errors):
            continue
        origin = raw.get("origin", ResponseOrigin.IMPORT)
        version = None
        if origin not in ResponseOrigin.values:
            errors.append((f"{field}.origin", f"must be one of {', '.join(ResponseOrigin.values)}, got {origin!r}"))
            continue
        if origin == ResponseOrigin.MODEL:
            name = raw.get("model_version")
            version = model_versions.get(str(name)) if name is not None else None
            if version is None:
                errors.append((f"{field}.model_version", f"no model version named {name!r} in this project"))
                continue
        elif raw.get("model_version") is not None:
            errors.append((f"{field}.model_version", "only responses with origin 'model' name a model version"))
            continue
        sampling = raw.get("sampling", {})
        if not isinstance(sampling, dict):
            errors.append((f"{field}.sampling", "must be an object"))
            continue
        responses.append({"text": response_text, "origin": origin, "model_version": version, "sampling": sampling})
    if raw_responses and len(raw_responses) % project.k:
        errors.append(
            (
                "responses",
                f"expected a multiple of K={project.k} responses (one response set per {project.k}), "
                f"got {len(raw_responses)}",
            )
        )
    if errors:
        raise _RowErrors(errors)
    return _Row(line, external_id.strip(), text, messages, split, list(tags), metadata, responses)


def prompts_import(
    *, project: Project, content: bytes | str, fmt: str, on_progress: Callable[[int], None] | None = None
) -> ImportSummary:
    """Validate every row, then write all of them in one transaction, or none. ``on_progress`` is
    told how many rows have been checked, after each row."""
    if fmt not in ("jsonl", "csv"):
        raise ApplicationError(f"format: must be 'jsonl' or 'csv', got {fmt!r}.", code="invalid")
    text = _decode(content)
    records = _jsonl_records(text) if fmt == "jsonl" else _csv_records(text)
    model_versions = {mv.name: mv for mv in ModelVersion.objects.filter(project=project)}
    model_versions.update({str(mv.pk): mv for mv in model_versions.values()})

    rows: list[_Row] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    bad_lines = 0
    for line, record, problem in records:
        if on_progress is not None:
            on_progress(len(rows) + bad_lines)
        if len(rows) + bad_lines >= settings.IMPORT_MAX_ROWS:
            raise ApplicationError(
                f"file: more than {settings.IMPORT_MAX_ROWS:,} rows; import at most that many per file.",
                code="too_many_rows",
            )
        row_errors: list[tuple[str, str]] = []
        if problem:
            row_errors.append(("", problem))
        else:
            try:
                row = _parse_row(record, line=line, project=project, model_versions=model_versions)
            except _RowErrors as exc:
                row_errors.extend(exc.errors)
            else:
                if row.external_id in seen:
                    row_errors.append(
                        ("external_id", f"'{row.external_id}' also appears on line {seen[row.external_id]}")
                    )
                else:
                    seen[row.external_id] = line
                    rows.append(row)
        if row_errors:
            bad_lines += 1
            errors.extend({"line": line, "field": field, "message": message} for field, message in row_errors)
    if not rows and not errors:
        raise ApplicationError("file: the file has no rows.", code="import_empty")

    existing = set(
        Prompt.objects.filter(project=project, external_id__in=[row.external_id for row in rows]).values_list(
            "external_id", flat=True
        )
    )
    for row in rows:
        if row.external_id in existing:
            bad_lines += 1
            errors.append(
                {
                    "line": row.line,
                    "field": "external_id",
                    "message": f"'{row.external_id}' already exists in this project",
                }
            )
    if errors:
        errors.sort(key=lambda error: error["line"])
        first = errors[0]
        where = f"line {first['line']}" + (f", field '{first['field']}'" if first["field"] else "")
        raise ApplicationError(
            f"{bad_lines} row(s) have errors; nothing was imported. First: {where}: {first['message']}.",
            code="import_invalid",
            errors=errors[:MAX_REPORTED_ERRORS],
        )
    try:
        return _write_rows(project=project, rows=rows)
    except IntegrityError as exc:  # a concurrent import of the same external ids
        raise Conflict(
            "external_id: another import added some of these prompts at the same time; nothing was imported.",
            code="import_conflict",
        ) from exc


@transaction.atomic
def _write_rows(*, project: Project, rows: list[_Row]) -> ImportSummary:
    prompts = Prompt.objects.bulk_create(
        [
            Prompt(
                project=project,
                external_id=row.external_id,
                text=row.text,
                messages=row.messages,
                split=row.split,
                tags=row.tags,
                metadata=row.metadata,
            )
            for row in rows
        ],
        batch_size=1000,
    )
    responses: list[Response] = []
    for prompt, row in zip(prompts, rows, strict=True):
        responses.extend(
            Response(
                prompt=prompt,
                text=item["text"],
                origin=item["origin"],
                model_version=item["model_version"],
                sampling=item["sampling"],
            )
            for item in row.responses
        )
    Response.objects.bulk_create(responses, batch_size=1000)
    sets = response_sets_build(project=project, prompt_ids=[prompt.pk for prompt in prompts])
    return ImportSummary(prompts=len(prompts), responses=len(responses), response_sets=sets)


@transaction.atomic
def response_sets_build(*, project: Project, prompt_ids: list[int] | None = None) -> int:
    """Group every K responses of a prompt not yet in a set into a new response set."""
    responses = Response.objects.filter(prompt__project=project, response_sets__isnull=True).order_by("prompt_id", "id")
    if prompt_ids is not None:
        responses = responses.filter(prompt_id__in=prompt_ids)
    by_prompt: dict[int, list[int]] = {}
    for response_id, prompt_id in responses.values_list("id", "prompt_id"):
        by_prompt.setdefault(prompt_id, []).append(response_id)
    groups = [
        (prompt_id, ids[start : start + project.k])
        for prompt_id, ids in by_prompt.items()
        for start in range(0, len(ids) - project.k + 1, project.k)
    ]
    return response_sets_create(project=project, groups=groups)


@transaction.atomic
def response_sets_create(
    *, project: Project, groups: list[tuple[int, list[int]]], evaluation_id: int | None = None
) -> int:
    """One response set per ``(prompt id, K response ids)``, the responses in a random stored order;
    ``evaluation_id``: the sets of that human evaluation (never reward-model data)."""
    sets = ResponseSet.objects.bulk_create(
        [
            ResponseSet(
                project=project, prompt_id=prompt_id, required_count=project.overlap, evaluation_id=evaluation_id
            )
            for prompt_id, _ in groups
        ],
        batch_size=1000,
    )
    rng = random.Random()
    items: list[ResponseSetItem] = []
    for response_set, (_, ids) in zip(sets, groups, strict=True):
        shuffled = list(ids)
        rng.shuffle(shuffled)  # the stored position is not the display order; each assignment reshuffles
        items.extend(
            ResponseSetItem(response_set=response_set, response_id=response_id, position=position)
            for position, response_id in enumerate(shuffled)
        )
    ResponseSetItem.objects.bulk_create(items, batch_size=2000)
    return len(sets)
