"""Where the training worker may read models and data from: one rule, used at registration, in
the loop settings and when a run reads its inputs."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

from django.conf import settings

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def server_path_problem(path: str, *, what: str) -> str | None:
    """Why the worker may not read `path` (an absolute path under settings.MODEL_ROOTS, links
    followed); None when it may."""
    if not os.path.isabs(path):
        return f"give an absolute path on the server, got '{path}'"
    resolved = Path(path).resolve()
    roots = [Path(root).resolve() for root in settings.MODEL_ROOTS]
    if not any(resolved == root or root in resolved.parents for root in roots):
        return (
            f"'{path}' is outside the directories {what} may be read from ({', '.join(map(str, roots))}; "
            "the server setting MODEL_ROOTS adds more)"
        )
    return None


def model_source_problem(path: str) -> str | None:
    """Why `path` cannot be a model source: a local directory must be under settings.MODEL_ROOTS,
    a hub id must match settings.MODEL_HUB_ALLOWLIST. None when it can."""
    if path.startswith(("/", ".", "~")) or "\\" in path or path.count("/") > 1:
        return server_path_problem(path, what="models")
    if not HUB_ID.fullmatch(path):
        return f"'{path}' is neither an absolute directory on the server nor a hub id (owner/name)"
    if not any(fnmatch.fnmatchcase(path, pattern) for pattern in settings.MODEL_HUB_ALLOWLIST):
        return (
            f"the hub id '{path}' is not on the server's allow-list (the setting MODEL_HUB_ALLOWLIST, "
            f"now: {', '.join(settings.MODEL_HUB_ALLOWLIST) or 'empty'})"
        )
    return None
