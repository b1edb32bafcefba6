"""Where a search's Optuna study lives: SQLite by default, a shared database for several
machines (``python -m training.search --storage postgresql://USER@HOST/DB --study NAME``).

:func:`open_storage` opens Optuna's RDB storage for a SQLAlchemy URL and checks it
before any training: a malformed URL, a missing driver (PostgreSQL needs the
``postgres`` extra, psycopg 3: ``pip install -e '.[postgres]'``; a plain
``postgresql://`` URL uses whichever of psycopg and psycopg2 is installed) or a server that does not answer
within :data:`CONNECT_TIMEOUT_S` is one :class:`StorageError` line, with the URL's
password hidden. Every process that opens the same URL and study name joins one study:
the database hands out trial numbers, so no two processes run the same trial.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from typing import Any

__all__ = ["CONNECT_TIMEOUT_S", "StorageError", "open_storage", "shown_url"]

logger = logging.getLogger(__name__)

#: Seconds to wait for a database server to accept the connection.
CONNECT_TIMEOUT_S = 10.0
#: Times to open the storage again after losing the race to create its tables.
SCHEMA_RACE_RETRIES = 5


class StorageError(ValueError):
    """The study storage cannot be opened (one line: which URL, and why)."""


def shown_url(url: str) -> str:
    """``url`` with its password hidden (``***``), for messages."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable URL>"


def _first_line(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    lines = [s.strip() for s in str(inner).strip().splitlines() if s.strip()]
    return lines[0] if lines else type(inner).__name__


def _create(optuna: Any, url: str, engine_kwargs: dict[str, Any]) -> Any:
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    # Workers started together on a new database race to create Optuna's tables: the
    # loser's CREATE TABLE fails (PostgreSQL: a duplicate pg_type row, or "already
    # exists"). The winner's tables are there a moment later; opening again finds them.
    attempt = 0
    while True:
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (IntegrityError, ProgrammingError) as e:
            if attempt == SCHEMA_RACE_RETRIES:
                raise
            attempt += 1
            logger.info("study tables being created by another worker (%s); again", _first_line(e))
            time.sleep(0.5 * attempt)


def open_storage(url: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """Optuna's ``RDBStorage`` for ``url``, connected (its tables created if new).

    PostgreSQL connections give up after ``timeout_s``; connections are checked before
    use (``pool_pre_ping``), so a worker outlives a database restart between trials.
    """
    import optuna
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise StorageError(
            f"bad --storage URL {url!r} ({_first_line(e)}); expected e.g. "
            "sqlite:///search.db or postgresql://USER@HOST/DB"
        ) from None
    shown = shown_url(url)
    engine_kwargs: dict[str, Any] = {}
    if parsed.drivername == "postgresql":  # no driver named: the one installed
        for module, driver in (
            ("psycopg", "postgresql+psycopg"),
            ("psycopg2", "postgresql+psycopg2"),
        ):
            if importlib.util.find_spec(module) is not None:
                parsed = parsed.set(drivername=driver)
                url = parsed.render_as_string(hide_password=False)
                break
    if parsed.get_backend_name() == "postgresql":
        engine_kwargs = {
            "connect_args": {"connect_timeout": max(1, math.ceil(timeout_s))},
            "pool_pre_ping": True,
        }
    try:
        storage = _create(optuna, url, engine_kwargs)
    except ImportError as e:  # the database's driver (psycopg, ...)
        missing = getattr(e.__cause__, "name", None) or e.name or _first_line(e)
        raise StorageError(
            f"--storage {shown}: its database driver is not installed ({missing}); "
            "for PostgreSQL: pip install -e '.[postgres]'"
        ) from None
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError, RuntimeError) as e:
        raise StorageError(f"cannot open the study storage {shown}: {_first_line(e)}") from None
    logger.info("study storage %s", shown)
    return storage
