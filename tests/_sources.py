"""The project's own source files, for tests that check every module."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# pyproject's packages.find: scans of "every module" walk these only, never a virtual
# environment or build folder that happens to sit in the checkout (CI's .venv-ci does).
PACKAGES = ("sim", "tracks", "agents", "training", "evaluation")


def project_sources() -> list[Path]:
    """Every .py file of the project's packages, sorted."""
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def entry_points() -> dict[str, Path]:
    """Every ``python -m`` entry point of the project: module name -> its file (a module
    with an ``if __name__ == "__main__":`` block, or a package's ``__main__.py``)."""
    found = {}
    for path in project_sources():
        if path.name == "__main__.py" or re.search(
            r'^if __name__ == "__main__":', path.read_text(encoding="utf-8"), flags=re.M
        ):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[module.removesuffix(".__main__")] = path
    return found
