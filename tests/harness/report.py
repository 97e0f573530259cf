"""How tests and scripts report: `figure` (one FIGURE line per scenario, repeated in
pytest's summary by tests/py/conftest.py) and `Checks` (one ok/FAIL line per named check,
for the ops scripts)."""

from __future__ import annotations

FIGURES: list[str] = []


def figure(scenario: str, text: str) -> None:
    """The one line per scenario that the issue asks for; run pytest with -s to see it live."""
    line = f"FIGURE {scenario}: {text}"
    FIGURES.append(line)
    print("\n" + line, flush=True)


class Checks:
    """Counts named checks and prints one `ok`/`FAIL` line for each."""

    def __init__(self):
        self.passed, self.failed = 0, []

    def __call__(self, ok: bool, name: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        print(f"{'ok  ' if ok else 'FAIL'} {name}{f': {detail}' if detail else ''}")
        return ok
