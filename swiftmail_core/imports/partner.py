"""A second connection that does part of a large import, committed with the first.

One backend merges about a million rows on one core while the other core
sits idle; two backends, each merging the addresses of its own part, finish
in about 0.7 of the time (docs/benchmarks.md, Imports, "session 20"). The
parts cannot share one transaction, so the partner's transaction is bound to
the caller's:

* the partner commits only when the caller says so, just before the caller
  commits; if the caller fails anywhere before that, the partner rolls back;
  if the partner fails, the caller raises and rolls back. The one window
  left is a crash between the partner's COMMIT and the caller's: then the
  partner's contacts are stored and the job is not finished, and running the
  same file again completes it (a re-import is idempotent).
* every wait between the two goes through PostgreSQL's lock manager, never
  only through Python, so its deadlock detector sees each cycle. The caller
  holds a session advisory lock ("the verdict") from the start; the partner,
  done merging, waits for it (shared). The partner holds another ("merging")
  while it merges; the caller, done with its own part, waits for that. A
  third transaction T that holds a row the partner needs while waiting for a
  row the caller holds makes the cycle caller -> partner -> T -> caller,
  which PostgreSQL breaks after ``deadlock_timeout``; a wait on a Python
  event there would hang all three for good.

The parts must not share an address (``contacts.part_filter``), or one would
wait for the other's commit.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import psycopg2

from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.errors import SwiftMailError

Result = TypeVar("Result")

#: The first key of this module's two-key advisory locks (the second is random per import).
LOCK_CLASS = 0x494D5054  # "IMPT"
#: Chunks of COPY text buffered for the partner (each up to 1 MiB): memory stays flat.
FEED_CHUNKS = 8
#: How long the caller waits for the partner's connection before giving up.
START_SECONDS = 30.0


class PartnerFailed(SwiftMailError):
    """The partner connection failed; the whole import is rolled back."""


class ChunkFeed:
    """A text stream ``copy_expert`` reads, fed by another thread.

    At most ``chunks`` chunks wait in it at once.
    """

    def __init__(self, chunks: int = FEED_CHUNKS) -> None:
        self._queue: queue.Queue[str | BaseException] = queue.Queue(chunks)
        self._closed = threading.Event()
        self.error: BaseException | None = None

    def put(self, chunk: str) -> None:
        """Queue ``chunk`` ('' ends the stream); give up once the reader has stopped."""
        while not self._closed.is_set():
            try:
                self._queue.put(chunk, timeout=0.2)
                return
            except queue.Full:
                continue

    def fail(self, error: BaseException) -> None:
        """End the stream with ``error``: the reader's next ``read`` raises it; never blocks."""
        self.error = error
        while True:
            try:
                self._queue.put_nowait(error)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()  # a chunk nobody will store now
                except queue.Empty:
                    pass

    def close(self) -> None:
        """Stop accepting chunks (the reader is gone); a blocked ``put`` returns."""
        self._closed.set()

    def read(self, size: int = -1) -> str:
        """Return the next chunk ('' at the end); raise the error ``fail`` was given."""
        if self.error is not None:
            raise self.error
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def readline(self, size: int = -1) -> str:
        """Not used by COPY; present for file-like completeness."""
        return self.read(size)


class TeeStream:
    """Read a COPY text stream and hand every chunk to a ``ChunkFeed`` as well."""

    def __init__(self, source: Any, feed: ChunkFeed) -> None:
        self._source = source
        self._feed = feed

    @property
    def error(self) -> BaseException | None:
        """The source's own error, if reading it failed."""
        return getattr(self._source, "error", None)

    def read(self, size: int = -1) -> str:
        """Return the source's next chunk, queued for the feed too."""
        chunk = self._source.read(size)
        self._feed.put(chunk)
        return chunk

    def readline(self, size: int = -1) -> str:
        """Not used by COPY; present for file-like completeness."""
        return self.read(size)


class MergePartner(Generic[Result]):
    """A second connection's transaction, committed just before the caller's.

    Use through ``partnered``. ``work(cursor, feed)`` runs in the partner's
    tenant transaction and returns its result; the caller feeds it with
    ``feed`` (or a ``TeeStream``) and collects the result with
    ``wait_merged``.
    """

    def __init__(self, tenant_id: uuid.UUID, caller_cursor: Any,
                 work: Callable[[Any, ChunkFeed], Result]) -> None:
        self.tenant_id = tenant_id
        self.feed = ChunkFeed()
        self._caller = caller_cursor
        self._work = work
        self._verdict_key = secrets.randbits(31)
        self._merging_key = secrets.randbits(31)
        self._commit = False
        self._ready = threading.Event()
        self._result: Result | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="import-partner", daemon=True)

    def start(self) -> None:
        """Hold the verdict, start the partner and wait until it holds its merging lock."""
        self._caller.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, self._verdict_key))
        self._thread.start()
        if not self._ready.wait(START_SECONDS):
            raise PartnerFailed("the import's second database connection did not start in time")
        if self._error is not None:
            raise PartnerFailed(f"the import's second connection failed: {self._error}") \
                from self._error

    def wait_merged(self) -> Result:
        """Wait (in PostgreSQL) until the partner's work is done; return its result."""
        self._caller.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)",
                             (LOCK_CLASS, self._merging_key))
        if self._error is not None or self._result is None:
            raise PartnerFailed(f"the import's second connection failed: {self._error}") \
                from self._error
        return self._result

    def commit(self) -> None:
        """Let the partner commit and wait for it; raise if its commit failed."""
        self._commit = True
        self._caller.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, self._verdict_key))
        self._thread.join()
        if self._error is not None:
            raise PartnerFailed(f"the import's second connection could not commit: {self._error}") \
                from self._error

    def abort(self, error: BaseException) -> None:
        """Make the partner roll back (its feed fails, its verdict is "no"); release the verdict.

        Does not wait for the partner: it may be waiting for a row whose
        holder waits for one of the caller's, and those are free only once
        the caller's whole transaction has rolled back (a row written in a
        released savepoint is waited for through the top-level transaction).
        """
        self._commit = False
        self.feed.fail(error)
        # NOTE: if the connection is gone, its session's locks went with it.
        with contextlib.suppress(psycopg2.Error):
            self._caller.execute("SELECT pg_advisory_unlock(%s, %s)",
                                 (LOCK_CLASS, self._verdict_key))

    def _run(self) -> None:
        try:
            with tenant_tx(self.tenant_id):
                cursor = app_db.cursor()
                cursor.execute("SELECT pg_advisory_lock(%s, %s)",
                               (LOCK_CLASS, self._merging_key))
                try:
                    self._ready.set()
                    cursor.execute("SAVEPOINT import_partner")
                    try:
                        self._result = self._work(cursor, self.feed)
                    except BaseException as ex:
                        # NOTE: recorded before the merging lock is released: the
                        # caller looks at it as soon as it gets that lock.
                        self._error = ex
                        self.feed.close()
                        cursor.execute("ROLLBACK TO SAVEPOINT import_partner")
                        raise
                finally:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)",
                                   (LOCK_CLASS, self._merging_key))
                cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)",
                               (LOCK_CLASS, self._verdict_key))
                if not self._commit:
                    raise _RolledBack
        except _RolledBack:
            pass
        except BaseException as ex:  # the caller raises it
            if self._error is None:
                self._error = ex
            self.feed.close()
        finally:
            self._ready.set()


class _RolledBack(Exception):
    """The caller decided against committing."""


@contextlib.contextmanager
def partnered(tenant_id: uuid.UUID, caller_cursor: Any,
              work: Callable[[Any, ChunkFeed], Result]) -> Iterator[MergePartner[Result]]:
    """Run ``work`` on a second connection; commit it as the block ends without error.

    Call inside the caller's ``tenant_tx``, and end the block just before that
    transaction commits: the partner commits first, then the caller. On an
    error in the block the caller's work since the start is rolled back to a
    savepoint (so its locks no longer hold up the partner), the partner rolls
    back, and the error propagates.
    """
    caller_cursor.execute("SAVEPOINT import_partnered")
    partner = MergePartner(tenant_id, caller_cursor, work)
    try:
        partner.start()
        yield partner
    except BaseException as ex:
        with contextlib.suppress(psycopg2.Error):  # the connection is gone: ex says why
            caller_cursor.execute("ROLLBACK TO SAVEPOINT import_partnered")
        partner.abort(ex)
        raise
    partner.commit()
