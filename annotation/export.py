"""Preference export in trl's format, streaming in constant memory.

Each row has ``prompt``, ``chosen``, ``rejected`` (trl's preference columns) plus ``margin``,
``is_tie``, the annotators, how many of them agree, guideline versions, the model versions that
wrote the two responses, and the ranking ids. Modes:

- ``annotator``: one row per labeler per pair; ``agreement`` counts the labelers of the same set
  who decided that pair the same way (this row's labeler included).
- ``majority``: one row per pair; the outcome most labelers chose (a split vote between the two
  responses is a tie); ``agreement`` is the size of that majority.
- ``consensus``: one row per pair, ordered by the set's stored consensus (Bradley-Terry over its
  labelers, or an admin's review); ``agreement`` counts the labelers who decided that pair the
  same way, ``consensus_confidence`` is the consensus's confidence for the whole set.

``annotator_skills`` carries each annotator's reliability on the project (one-coin Dawid-Skene),
so reward-model training can weight comparisons by it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby, islice
from operator import itemgetter
from pathlib import Path
from typing import Any

from django.db import connection, transaction

from annotation import rules
from annotation.models import Project, Prompt, Response
from annotation.selectors import preference_comparisons
from config.exceptions import ApplicationError
from quality.models import LabelerQuality, ResponseSetConsensus

EXPORT_MODES = ("annotator", "majority", "consensus")
CHUNK = 5000
TEXT_CACHE = 4096  # JSON-encoded texts kept by the JSONL export; a chunk of comparisons uses < 1,000

_FIELDS = (
    "id",
    "response_set_id",
    "response_a_id",
    "response_b_id",
    "outcome",
    "margin",
    "ranking_id",
    "labeler__username",
    "ranking__guideline__version",
    "response_set__prompt_id",
)


def _is_conversational(project: Project) -> bool:
    """Chat prompts anywhere in the project make every row conversational (one schema per export)."""
    return Prompt.objects.filter(project=project, messages__isnull=False).exists()


def _messages(text: str, role: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def _enriched(comparisons: Iterable[tuple[Any, ...]], conversational: bool) -> Iterator[tuple[Any, ...]]:
    """Attach prompt and response texts, fetched once per chunk of comparisons."""
    iterator = iter(comparisons)
    while chunk := list(islice(iterator, CHUNK)):
        response_ids = {row[2] for row in chunk} | {row[3] for row in chunk}
        responses = {
            pk: (text, model)
            for pk, text, model in Response.objects.filter(pk__in=response_ids).values_list(
                "pk", "text", "model_version__name"
            )
        }
        prompt_ids = {row[9] for row in chunk}
        prompts = {}
        for pk, external_id, text, messages, split, tags in Prompt.objects.filter(pk__in=prompt_ids).values_list(
            "pk", "external_id", "text", "messages", "split", "tags"
        ):
            if conversational:
                prompt: Any = messages if messages else _messages(text, "user")
            else:
                prompt = text
            prompts[pk] = (prompt, external_id, split, tags)
        for row in chunk:
            yield (*row, responses[row[2]], responses[row[3]], prompts[row[9]])


def _row_dict(
    *,
    prompt: tuple[Any, ...],
    first: tuple[str, str | None],
    second: tuple[str, str | None],
    outcome: str,
    margin: float,
    members: list[tuple[Any, ...]],
    agreement: int,
    n_annotators: int,
    response_set_id: int,
    conversational: bool,
    skills: dict[str, float | None],
    consensus_confidence: float | None = None,
) -> dict[str, Any]:
    (chosen_text, chosen_model), (rejected_text, rejected_model) = (
        (second, first) if outcome == rules.OUTCOME_B else (first, second)
    )
    prompt_value, external_id, split, tags = prompt
    return {
        "prompt": prompt_value,
        "chosen": _messages(chosen_text, "assistant") if conversational else chosen_text,
        "rejected": _messages(rejected_text, "assistant") if conversational else rejected_text,
        "margin": float(margin),
        "is_tie": outcome == rules.OUTCOME_TIE,
        "agreement": agreement,
        "n_annotators": n_annotators,
        "annotator_ids": [member[7] for member in members],
        "annotator_skills": [skills.get(member[7]) for member in members],
        "consensus_confidence": consensus_confidence,
        "ranking_ids": [member[6] for member in members],
        "comparison_ids": [member[0] for member in members],
        "guideline_versions": sorted({member[8] for member in members if member[8] is not None}),
        "chosen_model": chosen_model,
        "rejected_model": rejected_model,
        "prompt_id": external_id,
        "split": split,
        "tags": list(tags),
        "response_set_id": response_set_id,
    }


def preference_rows(
    *, project: Project, split: str | None = None, drop_ties: bool = False, mode: str = "annotator"
) -> Iterator[dict[str, Any]]:
    """Yield export rows one at a time; memory stays flat whatever the project's size."""
    if connection.vendor != "postgresql":
        # SQLite's transactions here are IMMEDIATE (they take the write lock): stream without one.
        yield from _preference_rows(project=project, split=split, drop_ties=drop_ties, mode=mode)
        return
    # Inside a transaction the server-side cursor is not WITH HOLD, so PostgreSQL streams the rows
    # as they are fetched instead of materialising the whole sorted result before the first one.
    with transaction.atomic():
        yield from _preference_rows(project=project, split=split, drop_ties=drop_ties, mode=mode)


def _preference_rows(
    *, project: Project, split: str | None, drop_ties: bool, mode: str, build: Callable[..., Any] | None = None
) -> Iterator[Any]:
    """The export's rows, each made by ``build`` (a dict by default; the JSONL export makes lines)."""
    _row = build or _row_dict
    if mode not in EXPORT_MODES:
        raise ApplicationError(f"mode: must be one of {', '.join(EXPORT_MODES)}, got {mode!r}.", code="invalid")
    if split is not None and split not in ("train", "val", "test"):
        raise ApplicationError(f"split: must be train, val or test, got {split!r}.", code="invalid")
    conversational = _is_conversational(project)
    comparisons = preference_comparisons(project=project)
    if split:
        comparisons = comparisons.filter(response_set__prompt__split=split)
    stream = comparisons.order_by("response_set_id", "response_a_id", "response_b_id", "id").values_list(*_FIELDS)
    skills: dict[str, float | None] = dict(
        LabelerQuality.objects.filter(project=project).values_list("labeler__username", "reliability")
    )
    consensus: dict[int, tuple[dict[str, int], float]] = {}
    if mode == "consensus":
        consensus = {
            set_id: (ranks, confidence)
            for set_id, ranks, confidence in ResponseSetConsensus.objects.filter(
                response_set__project=project
            ).values_list("response_set_id", "ranks", "confidence")
        }
    rows = _enriched(stream.iterator(chunk_size=CHUNK), conversational)
    for (set_id, a_id, b_id), group in groupby(rows, key=itemgetter(1, 2, 3)):
        members = list(group)
        votes: dict[str, int] = {}  # a plain dict: Counter costs more than the rest of a small group
        for member in members:
            votes[member[4]] = votes.get(member[4], 0) + 1
        first, second, prompt = members[0][10], members[0][11], members[0][12]
        common = {"prompt": prompt, "first": first, "second": second, "response_set_id": set_id}
        if mode == "consensus":
            if set_id not in consensus:
                continue  # not computed yet: the quality refresh writes it
            ranks, confidence = consensus[set_id]
            rank_a, rank_b = ranks.get(str(a_id)), ranks.get(str(b_id))
            if rank_a is None or rank_b is None:
                continue
            outcome = rules.pair_outcome(rank_a, rank_b)
            if drop_ties and outcome == rules.OUTCOME_TIE:
                continue
            yield _row(
                **common,
                outcome=outcome,
                margin=rules.pair_margin(rank_a, rank_b),
                members=members,
                agreement=votes.get(outcome, 0),
                n_annotators=len(members),
                conversational=conversational,
                skills=skills,
                consensus_confidence=confidence,
            )
        elif mode == "annotator":
            for member in members:
                outcome = member[4]
                if drop_ties and outcome == rules.OUTCOME_TIE:
                    continue
                yield _row(
                    prompt=prompt,
                    first=first,
                    second=second,
                    outcome=outcome,
                    margin=member[5],
                    members=[member],
                    agreement=votes.get(outcome, 0),
                    n_annotators=len(members),
                    response_set_id=set_id,
                    conversational=conversational,
                    skills=skills,
                )
        else:
            outcome = rules.majority_outcome(votes)
            if drop_ties and outcome == rules.OUTCOME_TIE:
                continue
            majority = [member for member in members if member[4] == outcome]
            margin = sum(member[5] for member in majority) / len(majority) if majority else 0.0
            yield _row(
                prompt=prompt,
                first=first,
                second=second,
                outcome=outcome,
                margin=margin,
                members=members,
                agreement=votes.get(outcome, 0),
                n_annotators=len(members),
                response_set_id=set_id,
                conversational=conversational,
                skills=skills,
            )


def preferences_export_jsonl(
    *, project: Project, split: str | None = None, drop_ties: bool = False, mode: str = "annotator"
) -> Iterator[str]:
    """The export as JSONL lines (each ends with a newline); the same bytes as ``json.dumps`` of
    each ``preference_rows`` row with compact separators, written without building the dicts."""
    kwargs: dict[str, Any] = {
        "project": project,
        "split": split,
        "drop_ties": drop_ties,
        "mode": mode,
        "build": _LineBuilder(),
    }
    if connection.vendor != "postgresql":
        yield from _preference_rows(**kwargs)
        return
    with transaction.atomic():  # see preference_rows
        yield from _preference_rows(**kwargs)


class _LineBuilder:
    """Formats one export row as a JSON line. Texts, prompts, usernames and model names recur
    across the rows of a response set: each is encoded once while its set streams by."""

    def __init__(self) -> None:
        self.dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        self.cache: dict[Any, str] = {}

    def encoded(self, key: Any, value: Any) -> str:
        found = self.cache.get(key)
        if found is None:
            if len(self.cache) >= TEXT_CACHE:
                self.cache.clear()
            found = self.cache[key] = self.dumps(value)
        return found

    def __call__(
        self,
        *,
        prompt: tuple[Any, ...],
        first: tuple[str, str | None],
        second: tuple[str, str | None],
        outcome: str,
        margin: float,
        members: list[tuple[Any, ...]],
        agreement: int,
        n_annotators: int,
        response_set_id: int,
        conversational: bool,
        skills: dict[str, float | None],
        consensus_confidence: float | None = None,
    ) -> str:
        (chosen_text, chosen_model), (rejected_text, rejected_model) = (
            (second, first) if outcome == rules.OUTCOME_B else (first, second)
        )
        prompt_value, external_id, split, tags = prompt
        enc = self.encoded
        if conversational:
            chosen = enc(("assistant", chosen_text), _messages(chosen_text, "assistant"))
            rejected = enc(("assistant", rejected_text), _messages(rejected_text, "assistant"))
        else:
            chosen, rejected = enc(("text", chosen_text), chosen_text), enc(("text", rejected_text), rejected_text)
        if len(members) == 1:  # annotator mode: one labeler per row, no joins needed
            member = members[0]
            skill = skills.get(member[7])
            annotators = f"[{enc(('user', member[7]), member[7])}]"
            skill_list = "[null]" if skill is None else f"[{float(skill)!r}]"
            rankings, comparisons = f"[{member[6]}]", f"[{member[0]}]"
            versions = "[]" if member[8] is None else f"[{member[8]}]"
        else:
            annotators = f"[{','.join(enc(('user', m[7]), m[7]) for m in members)}]"
            values = [skills.get(m[7]) for m in members]
            skill_list = f"[{','.join('null' if v is None else repr(float(v)) for v in values)}]"
            rankings = f"[{','.join(str(m[6]) for m in members)}]"
            comparisons = f"[{','.join(str(m[0]) for m in members)}]"
            versions = f"[{','.join(map(str, sorted({m[8] for m in members if m[8] is not None})))}]"
        tail = self.cache.get(("tail", external_id))
        if tail is None:
            tail = self.cache[("tail", external_id)] = (
                f'"prompt_id":{self.dumps(external_id)},"split":{self.dumps(split)},"tags":{self.dumps(list(tags))}'
            )
        confidence = "null" if consensus_confidence is None else repr(float(consensus_confidence))
        return (
            f'{{"prompt":{enc(("prompt", external_id), prompt_value)},"chosen":{chosen},"rejected":{rejected},'
            f'"margin":{float(margin)!r},"is_tie":{"true" if outcome == rules.OUTCOME_TIE else "false"},'
            f'"agreement":{agreement},"n_annotators":{n_annotators},"annotator_ids":{annotators},'
            f'"annotator_skills":{skill_list},"consensus_confidence":{confidence},"ranking_ids":{rankings},'
            f'"comparison_ids":{comparisons},"guideline_versions":{versions},'
            f'"chosen_model":{enc(("model", chosen_model), chosen_model)},'
            f'"rejected_model":{enc(("model", rejected_model), rejected_model)},{tail},'
            f'"response_set_id":{response_set_id}}}\n'
        )


def _features(conversational: bool) -> Any:
    from datasets import Features, Value

    message = [{"role": Value("string"), "content": Value("string")}]
    text: Any = message if conversational else Value("string")
    return Features(
        {
            "prompt": text,
            "chosen": text,
            "rejected": text,
            "margin": Value("float32"),
            "is_tie": Value("bool"),
            "agreement": Value("int32"),
            "n_annotators": Value("int32"),
            "annotator_ids": [Value("string")],
            "annotator_skills": [Value("float32")],
            "consensus_confidence": Value("float32"),
            "ranking_ids": [Value("int64")],
            "comparison_ids": [Value("int64")],
            "guideline_versions": [Value("int32")],
            "chosen_model": Value("string"),
            "rejected_model": Value("string"),
            "prompt_id": Value("string"),
            "split": Value("string"),
            "tags": [Value("string")],
            "response_set_id": Value("int64"),
        }
    )


def preferences_export_dataset(*, project: Project, path: str | Path, **kwargs: Any) -> int:
    """Write the export as a Hugging Face ``datasets`` dataset to ``path`` (``load_from_disk``)."""
    from datasets import Dataset

    conversational = _is_conversational(project)
    target = Path(path)
    with tempfile.TemporaryDirectory(prefix="export-") as cache:

        def generate() -> Iterator[dict[str, Any]]:
            yield from preference_rows(project=project, **kwargs)

        # A fresh fingerprint: the rows come from the database, not from anything datasets can hash.
        dataset = Dataset.from_generator(
            generate, features=_features(conversational), cache_dir=cache, fingerprint=uuid.uuid4().hex
        )
        if target.exists():
            shutil.rmtree(target)
        dataset.save_to_disk(str(target))
        return len(dataset)
