"""The ``pyg-rbp`` commands written in the README and the committed boards, as argv lists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_START = re.compile(r"(?:^|[`\s$])(pyg-rbp (?:train|leaderboard|hopfield|hyperopt|bench|demo)\b.*)")


def documents() -> list[Path]:
    """README.md and every markdown file under benchmarks/."""
    return [REPO / "README.md", *sorted((REPO / "benchmarks").rglob("*.md"))]


def committed_commands() -> list[str]:
    """Every ``pyg-rbp <command> ...`` line (backslash continuations joined, comments and
    inline-code ticks removed), in a stable order, without repeats."""
    found: dict[str, None] = {}
    for doc in documents():
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = _START.search(lines[i])
            i += 1
            if not m:
                continue
            text = m.group(1)
            while text.rstrip().endswith("\\") and i < len(lines):
                text = text.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
            text = text.split("`", 1)[0].split(" # ", 1)[0].split("|", 1)[0].strip()
            found[" ".join(text.split())] = None
    return list(found)


def argv_of(command: str) -> list[str]:
    return shlex.split(command)[1:]
