"""Names an answer recommends: the items of its own lists and tables, and its bold names.

The rule (deterministic, documented in docs/insights.md):
- a numbered (`1.`, `2)`) or bulleted (`-`, `*`, `•`) line gives the name it starts with:
  its bold part when it starts bold (`1. **Acme Cloud** - ...`), otherwise the words before
  the first separator (`:`, a spaced hyphen or dash, `(`, `,`), at most `MAX_WORDS` words;
- a table row (`| Acme | ... |`) gives its first cell, except the header row (the one
  above a `|---|` rule);
- a bold run anywhere (`**Acme**`, `__Acme__`) gives its text.
A candidate counts only if it starts with an upper-case letter or a digit, holds 2 to
`MAX_CHARS` characters, at most `MAX_WORDS` words, and is not a heading word such as
"Pros" or "Summary" (`_NOT_NAMES`).

Known misses: names in running prose ("try Acme or Globex"), lists whose items start with a
sentence rather than the name ("1. If you need speed, Acme..."), names written lower-case,
and plain-text tables without pipes. Known false positives: bold words that are not products
("**Pricing**" past the stop list), list items that are features, not names.
"""

from __future__ import annotations

import re

MAX_WORDS = 4
MAX_CHARS = 60
# Names taken from one answer at most (an answer listing hundreds of items is a catalogue).
MAX_NAMES = 50

_ITEM = re.compile(r"^[ \t]{0,6}(?:\d{1,3}[.)]|[-*•+])[ \t]+(.+)$", re.MULTILINE)
_ROW = re.compile(r"^[ \t]*\|([^|\n]+)\|.*$", re.MULTILINE)
_HEADER_RULE = re.compile(r"[ \t]*\|[ \t:|-]+\|[ \t]*(?:\n|$)")
_BOLD = re.compile(r"\*\*([^*\n]{2,60})\*\*|__([^_\n]{2,60})__")
_LEADING_BOLD = re.compile(r"^(?:\*\*([^*\n]+)\*\*|__([^_\n]+)__)")
_SEPARATOR = re.compile(r":| [-\u2013\u2014] |\(|,|\. ")
_LINK = re.compile(r"\[([^\]\n]+)\]\([^)\n]*\)")
_NOT_NAMES = frozenset(
    [
        "pros",
        "cons",
        "summary",
        "overview",
        "conclusion",
        "features",
        "pricing",
        "price",
        "cost",
        "note",
        "notes",
        "tip",
        "tips",
        "example",
        "examples",
        "best",
        "use",
        "case",
        "cases",
        "key",
        "considerations",
        "recommendation",
        "recommendations",
        "verdict",
        "option",
        "options",
        "alternative",
        "alternatives",
        "why",
        "what",
        "how",
        "when",
        "where",
        "who",
        "step",
    ]
)


def listed_names(text: str) -> list[str]:
    """The names the answer lists or makes bold, in order of first appearance, each once
    (case-insensitive), at most `MAX_NAMES`."""
    found: list[tuple[int, str]] = []
    for match in _ITEM.finditer(text):
        found.append((match.start(), _lead(match.group(1))))
    for match in _ROW.finditer(text):
        if not _HEADER_RULE.match(text, match.end() + 1):  # a header names the columns
            found.append((match.start(), match.group(1)))
    for match in _BOLD.finditer(text):
        found.append((match.start(), match.group(1) or match.group(2)))
    names: list[str] = []
    seen: set[str] = set()
    for _, raw in sorted(found):
        name = _clean(raw)
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            names.append(name)
            if len(names) == MAX_NAMES:
                break
    return names


def _lead(item: str) -> str:
    """The name an item starts with: its leading bold part, or its words before a separator."""
    item = _LINK.sub(r"\1", item.strip())
    bold = _LEADING_BOLD.match(item)
    if bold:
        return bold.group(1) or bold.group(2)
    return _SEPARATOR.split(item, maxsplit=1)[0]


def _clean(raw: str) -> str:
    name = _LINK.sub(r"\1", raw).strip(" \t*_`:.-\u2013\u2014#").strip()
    name = " ".join(name.split())
    if not 2 <= len(name) <= MAX_CHARS or len(name.split()) > MAX_WORDS:
        return ""
    if not (name[0].isupper() or name[0].isdigit()):
        return ""
    if set(name) <= set("-:| ") or name.casefold() in _NOT_NAMES:
        return ""
    return name
