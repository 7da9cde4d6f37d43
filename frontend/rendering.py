"""Markdown to safe HTML for prompts, responses and guidelines.

Two layers, because text from prompts and responses is untrusted: raw HTML in the markdown is
never passed through (it is shown as text, so a response holding ``<script>`` reads as code),
and the generated HTML is then cleaned by nh3 against an allow-list of tags and attributes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import markdown
import nh3

_ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol",
    "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "td": {"align"}, "th": {"align"}}


def _markdown() -> markdown.Markdown:
    md = markdown.Markdown(extensions=["fenced_code", "tables", "sane_lists"], output_format="html")
    # Raw HTML blocks and inline tags become escaped text instead of markup.
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    # Images are not on the allow-list anyway; skipping their patterns saves a third of the time.
    for name in ("image_link", "image_reference", "short_image_ref", "automail"):
        md.inlinePatterns.deregister(name)
    return md


# Every labeler of a response set sees the same responses, and a reload renders them again.
@lru_cache(maxsize=2048)
def render_markdown(text: str) -> str:
    """Markdown (code blocks, tables, lists) as sanitised HTML; raw HTML in ``text`` shows as text."""
    html = _markdown().convert(text or "")
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


@dataclass(frozen=True)
class ChatTurn:
    role: str
    html: str


def render_prompt(*, text: str, messages: list[dict[str, Any]] | None) -> list[ChatTurn]:
    """A prompt as chat turns; a plain-text prompt is one user turn."""
    if messages:
        return [
            ChatTurn(role=str(message.get("role", "user")), html=render_markdown(str(message.get("content", ""))))
            for message in messages
        ]
    return [ChatTurn(role="user", html=render_markdown(text))]


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "del", "ctx" or "hunk"
    text: str


def text_diff(old: str, new: str) -> list[DiffLine]:
    """A unified line diff of two guideline bodies, for display."""
    lines = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3):
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            lines.append(DiffLine("hunk", line))
        elif line.startswith("+"):
            lines.append(DiffLine("add", line[1:]))
        elif line.startswith("-"):
            lines.append(DiffLine("del", line[1:]))
        else:
            lines.append(DiffLine("ctx", line[1:]))
    return lines
