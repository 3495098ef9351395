"""The embedded mode's claim on its database: one ``ocrserve serve`` per SQLite file.

Kept apart from the store: a server takes this lock before it says it is ready (a second
server on the same data folder must refuse to start), and that must not import SQLAlchemy,
which the task store brings in only after the server is ready for ``/ocr``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from urllib.parse import unquote

from ocrserve.errors import StoreError
from ocrserve.urls import redact_url


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL as SQLAlchemy reads it (``sqlite:///rel``, ``sqlite:////abs``,
    any ``+driver``, a ``?query`` ignored); None for another database or an in-memory one.

    Parsed here rather than with ``sqlalchemy.engine.make_url`` only to keep SQLAlchemy out of
    a server's start; tests/test_startup.py checks that both read the same path.

    >>> sqlite_path("sqlite:////data/tasks.db")
    PosixPath('/data/tasks.db')
    >>> sqlite_path("postgresql+psycopg://u@db/ocr") is None
    True
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] != "sqlite":
        return None
    database = unquote(rest.removeprefix("/").partition("?")[0])
    if not database or database == ":memory:":
        return None
    return Path(database)


class DatabaseLock:
    """An exclusive ``flock`` on ``<database>.lock``, held while the embedded workers run.

    >>> lock = DatabaseLock.for_url("sqlite:////data/tasks.db")  # doctest: +SKIP
    >>> lock.acquire(); ...; lock.release()                      # doctest: +SKIP
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def for_url(cls, url: str) -> DatabaseLock:
        database = sqlite_path(url)
        if database is None:
            raise StoreError(
                "the embedded task workers run on SQLite only, which they own alone; for "
                f"{redact_url(url)} set OCRSERVE_BROKER_URL too "
                "and run `ocrserve worker` processes (distributed mode), or unset "
                "OCRSERVE_DATABASE_URL",
                url=redact_url(url),
            )
        return cls(database.with_name(database.name + ".lock"))

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(
                f"another ocrserve process (pid {holder}) runs the tasks of "
                f"{self.path.with_suffix('')}; one `ocrserve serve` per data folder "
                "(OCRSERVE_DATA_DIR), or the distributed mode for several",
                url=str(self.path),
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
