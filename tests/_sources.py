"""The project's own source files, for tests that check every module."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# pyproject's packages.find: scans of "every module" walk these only, never a virtual
# environment or build folder that happens to sit in the checkout (CI's .venv-ci does).
PACKAGES = ("sim", "tracks", "agents", "training", "evaluation")


def project_sources() -> list[Path]:
    """Every .py file of the project's packages, sorted."""
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))
