#!/usr/bin/env python3
"""The repo stands on its own: no tracked file may point at files outside it.

Fails (exit 1, one line per hit) when a tracked text file mentions a path beside or above
the checkout (the developers' shared notes), an absolute path of one machine's work
directory, or a design note that is not in the repo (see OUTSIDE below), or cites a section
of docs/PROTOCOLS.md that does not exist (`PROTOCOLS.md §5.8` needs a heading `5.8`).
Standard library only; run by `make lint`.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Written so that this file does not match itself.
OUTSIDE = re.compile(r"\.\./shared|/wor[k]/|\b(?:DESIGN|STYLE)\.md")
SECTION = re.compile(r"PROTOCOLS\.md,? ((?:§\s?[\d.]*\d(?:,? (?:and )?)?)+)")
SKIP_DIRS = {".git", "target", ".venv", "node_modules"}


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but build output
        return [p for p in ROOT.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)]


def protocol_sections() -> set[str]:
    doc = ROOT / "docs" / "PROTOCOLS.md"
    if not doc.is_file():
        return set()
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)[. ]", doc.read_text(), re.M))


def main() -> int:
    sections = protocol_sections()
    problems = []
    for path in tracked_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary (screenshots) or gone
        rel = path.relative_to(ROOT)
        for n, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE.search(line):
                problems.append(f"{rel}:{n}: refers to a file outside the repo: {line.strip()[:120]}")
            for cited in SECTION.findall(line):
                for number in re.findall(r"§\s?([\d.]*\d)", cited):
                    if number not in sections:
                        problems.append(f"{rel}:{n}: docs/PROTOCOLS.md has no section {number}")
    for p in problems:
        print(p)
    print(f"self-contained: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
