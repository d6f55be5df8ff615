"""The durable spool: messages and envelopes on disk before anyone hears 250.

Layout under ``spool_dir``::

    tmp/        files being written (never read; stale ones cleared at start)
    queue/      ID.msg   one file: a header line, the envelope (JSON), the message
                ID.state the latest per-recipient state (atomically replaced)
    hold/       held messages (``swiftmail relay hold``), same file names
    control/    commands from the CLI to the running relay (JSON files)
    new/        announcements: tell a running relay what to load without
                listing all of queue/: an empty file named ID for one
                message, or NAME.ids listing a batch's ids, one a line
    free/       finished messages' files, kept for a batch writer to reuse
                (never read; at most FREE_LIMIT; emptied when unused a minute)

Writing follows Postfix: write the whole file in ``tmp/``, ``fsync`` it,
``rename`` it into ``queue/`` and ``fsync`` the directory. Only then does the
caller reply 250 (or return from ``spool_message``). A batch shares the
directory ``fsync`` (group commit). Any ``OSError`` becomes ``SpoolError``,
which the listener turns into 451/452, never 250.

Delivery is at-least-once: a message is removed only after its last
recipient is final, so a crash may deliver it twice, never zero times.

Files are reused: removing a finished message renames its file into
``free/`` (up to ``FREE_LIMIT`` files of at most ``FREE_MAX_BYTES``), and a
batch write takes files from there (a rename into ``tmp/``), overwrites and
truncates them instead of creating new ones. Creating a file allocates an
inode, and on ext4 without a journal (this project's benchmark machines)
the allocator skips, one by one, every inode freed in the last 5 to 30
seconds: with the relay freeing one a message, that cost 0.3 to 1 ms of CPU
per created file. Taken files are made durable as gone from ``queue/``
(one ``syncfs``) before a byte of them is overwritten, so a crash can never
leave a finished message's name on another message's bytes; readers check
that a file's envelope carries its own id all the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import json
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog

from swiftmail_core.errors import ServiceUnavailableError

log = structlog.get_logger("swiftmail.relay.spool")
MAGIC = b"SWIFTMAIL-SPOOL 1 "
#: A file in tmp/ untouched this long is a crash's leftover, not a write in progress.
TMP_STALE_SECONDS = 300.0
#: A ``new/`` file with this suffix announces a batch: its ids, one a line.
ANNOUNCEMENT_SUFFIX = ".ids"
#: Finished messages' files kept in free/ for reuse, at most (disk held: about 64 MB of
#: campaign mail), and the largest file kept (bigger ones are deleted).
FREE_LIMIT = 1000
FREE_MAX_BYTES = 256 * 1024
#: Seconds between recounts of free/ by a remover (the count is kept in between).
FREE_RECOUNT_SECONDS = 1.0
#: A file in free/ not reused for this long is emptied (``scrub_free``): delivered mail's
#: bytes are not kept on disk once sending goes quiet.
FREE_SCRUB_SECONDS = 60.0
PENDING, DELIVERED, BOUNCED, EXPIRED = "pending", "delivered", "bounced", "expired"
FINAL = frozenset({DELIVERED, BOUNCED, EXPIRED})


class SpoolError(ServiceUnavailableError):
    """The spool cannot take the message; ``temporary_code`` says which 4xx."""

    def __init__(self, message: str, *, no_space: bool = False) -> None:
        super().__init__(message)
        self.no_space = no_space

    @property
    def smtp_reply(self) -> str:
        """Return the SMTP reply for this failure (452 when out of space)."""
        if self.no_space:
            return "452 4.3.1 Insufficient system storage, try again later"
        return "451 4.3.0 Local error in processing, try again later"


@dataclasses.dataclass
class Recipient:
    """One envelope recipient and where its delivery stands."""

    address: str
    ledger_id: int | None = None
    status: str = PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_reply: str = ""
    bounce_class: str | None = None
    dsn_sent: bool = False  # a DSN for this recipient's failure is spooled

    @property
    def domain(self) -> str:
        """Return the recipient's domain, lower case."""
        return self.address.rpartition("@")[2].lower()


@dataclasses.dataclass
class Envelope:
    """What the spool keeps about a message besides its bytes."""

    id: str
    mail_from: str
    recipients: list[Recipient]
    tenant_id: str | None = None
    campaign_id: str | None = None
    source: str = "handoff"  # handoff | submission | dsn
    sender_domain: str | None = None  # the From domain (warm-up is counted per domain)
    warmup_plan: dict[str, Any] | None = None  # the tenant's plan for that domain, if any
    created_at: float = dataclasses.field(default_factory=time.time)
    size: int = 0
    smtputf8: bool = False  # the submitter used SMTPUTF8: pass it on (or bounce) when relaying
    body_type: str = ""  # the submission's BODY= (8BITMIME), passed on when relaying
    return_path_domain: str = ""  # the sending domain's VERP domain (bounces.<domain>), if set
    moved_from: str = ""  # the spool ``swiftmail relay reinject`` moved it from, if any
    #: The bytes are CRLF throughout (no bare CR or LF): the platform hand-off's output,
    #: canonical by construction. Delivery then skips its line-ending check (``dot_stuff``).
    crlf: bool = False

    def to_json(self) -> bytes:
        """Serialise for the spool file (as ``dataclasses.asdict`` would, faster)."""
        data = {name: getattr(self, name) for name in _ENVELOPE_FIELDS}
        data["recipients"] = [{name: getattr(recipient, name) for name in _RECIPIENT_FIELDS}
                              for recipient in self.recipients]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        """Rebuild from ``to_json`` output."""
        recipients = [Recipient(**r) for r in data.pop("recipients")]
        return cls(recipients=recipients, **data)

    @property
    def pending(self) -> list[Recipient]:
        """Return the recipients not yet final."""
        return [r for r in self.recipients if r.status not in FINAL]


_ENVELOPE_FIELDS = tuple(field.name for field in dataclasses.fields(Envelope))
_RECIPIENT_FIELDS = tuple(field.name for field in dataclasses.fields(Recipient))


def _own(envelope: Envelope, queue_id: str) -> Envelope:
    """Return ``envelope`` if it is the message ``queue_id``; raise FileNotFoundError if not.

    A finished message's file is reused for another message (``free/``): a
    reader that opened it just before is told the message is gone.
    """
    if envelope.id != queue_id:
        raise FileNotFoundError(errno.ENOENT, f"spool file {queue_id} now holds {envelope.id}")
    return envelope


def new_id() -> str:
    """Return a time-ordered, unique queue id."""
    return f"{time.time_ns():016x}{secrets.token_hex(4)}"


def _wrap(ex: OSError, what: str) -> SpoolError:
    no_space = ex.errno in (errno.ENOSPC, errno.EDQUOT)
    return SpoolError(f"spool cannot {what}: {ex}", no_space=no_space)


def _load_syncfs() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def _sync_filesystem(path: Path) -> None:
    """Flush every dirty page and inode of the filesystem holding ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A spool directory: durable writes, state updates, scans."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.queue = self.root / "queue"
        self.hold = self.root / "hold"
        self.control = self.root / "control"
        self.new = self.root / "new"
        self.free = self.root / "free"
        for directory in (self.tmp, self.queue, self.hold, self.control, self.new, self.free):
            directory.mkdir(parents=True, exist_ok=True)
        self._free_count = 0
        self._free_counted_at = float("-inf")

    # Writing --------------------------------------------------------------

    def write(self, envelope: Envelope, raw: bytes) -> str:
        """Store one message durably; return its queue id."""
        return self.write_many([(envelope, raw)])[0]

    def write_many(self, items: Sequence[tuple[Envelope, bytes]]) -> list[str]:
        """Store messages durably with one flush for the batch (group commit).

        A single message is fsynced on its own. A batch is written without
        per-file fsyncs, flushed with one ``syncfs`` of the spool's
        filesystem (Linux), then renamed into ``queue/`` and the directory
        fsynced. Returns only when all of it is on disk; raises
        ``SpoolError`` (and leaves nothing in ``queue/``) otherwise.
        """
        staged = self.stage(items)
        self.commit(staged)
        self.announce(items)
        return [envelope.id for envelope, _ in items]

    def stage(self, items: Sequence[tuple[Envelope, bytes]]) -> list[tuple[Path, Path]]:
        """Write messages to ``tmp/`` and flush them; return (temporary, final) paths.

        Nothing is in ``queue/`` yet: ``commit`` renames them there,
        ``discard`` drops them. A batch reuses files from ``free/`` where it
        can (see the module's docstring). Raises ``SpoolError`` (after
        cleaning up).
        """
        written: list[tuple[Path, Path]] = []
        batch_sync = len(items) > 1 and _syncfs is not None
        try:
            reused = self._take_free([envelope.id for envelope, _ in items]) if batch_sync else set()
            if reused:
                # Their removal from queue/ is durable before they are overwritten.
                written.extend((self.tmp / queue_id, self.queue / f"{queue_id}.msg")
                               for queue_id in reused)
                _sync_filesystem(self.tmp)
            for envelope, raw in items:
                envelope.size = len(raw)
                body = envelope.to_json()
                temporary = self.tmp / envelope.id
                if envelope.id in reused:
                    fd = os.open(temporary, os.O_WRONLY)
                else:
                    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    written.append((temporary, self.queue / f"{envelope.id}.msg"))
                try:
                    head = MAGIC + str(len(body)).encode() + b"\n"
                    os.write(fd, head)
                    view = memoryview(body + raw)
                    while view:
                        view = view[os.write(fd, view):]
                    if envelope.id in reused:  # a longer message's bytes may follow
                        os.ftruncate(fd, len(head) + len(body) + len(raw))
                    if not batch_sync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            if batch_sync:
                _sync_filesystem(self.tmp)
        except OSError as ex:
            self.discard(written)
            raise _wrap(ex, "write") from ex
        if reused:  # commit renames in the batch's order
            order = {envelope.id: index for index, (envelope, _) in enumerate(items)}
            written.sort(key=lambda paths: order[paths[0].name])
        return written

    def _take_free(self, queue_ids: Sequence[str]) -> set[str]:
        """Rename files from ``free/`` to ``tmp/QUEUE_ID`` for some ids; return those ids.

        A rename is the claim: of two writers taking the same file, one gets
        it and the other an error, and tries the next.
        """
        try:
            names = [entry.name for entry in os.scandir(self.free)]
        except OSError:
            return set()
        taken: set[str] = set()
        if not names:
            return taken
        start = secrets.randbelow(len(names))  # writers at once mostly try different files
        candidates = iter(names[start:] + names[:start])
        for queue_id in queue_ids:
            for name in candidates:
                try:
                    os.rename(self.free / name, self.tmp / queue_id)
                except OSError:
                    continue  # another writer took it
                taken.add(queue_id)
                break
            else:
                break
        return taken

    def commit(self, staged: Sequence[tuple[Path, Path]]) -> None:
        """Rename staged messages into ``queue/`` and fsync it (all or, on error, none)."""
        try:
            for temporary, final in staged:
                os.rename(temporary, final)
            _fsync_dir(self.queue)
        except OSError as ex:
            self.discard(staged)
            raise _wrap(ex, "write") from ex

    @staticmethod
    def discard(staged: Sequence[tuple[Path, Path]]) -> None:
        """Remove staged (or committed but unacknowledged) files."""
        for temporary, final in staged:
            for path in (temporary, final):
                try:
                    path.unlink()
                except OSError:
                    pass

    def announce(self, items: Sequence[tuple[Envelope, bytes]]) -> None:
        """Tell a running relay about committed messages (``new/``) and log them.

        One message is announced by an empty ``new/ID``; a batch by one
        ``new/NAME.ids`` file listing its ids (written in ``tmp/`` and renamed,
        so a relay never reads it half-written): one file created and removed
        per batch instead of one per message.
        """
        try:
            if len(items) == 1:
                os.close(os.open(self.new / items[0][0].id, os.O_WRONLY | os.O_CREAT, 0o600))
            elif items:
                name = f"{items[0][0].id}{ANNOUNCEMENT_SUFFIX}"
                temporary = self.tmp / name
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, "\n".join(envelope.id for envelope, _ in items).encode())
                finally:
                    os.close(fd)
                os.rename(temporary, self.new / name)
        except OSError:
            pass  # only a hint: the periodic full scan finds the messages anyway
        for envelope, _ in items:
            log.info("message_accepted", queue_id=envelope.id, tenant_id=envelope.tenant_id,
                     source=envelope.source,
                     recipient_domains=sorted({r.domain for r in envelope.recipients}))

    def save_state(self, envelope: Envelope, data: bytes | None = None) -> None:
        """Persist per-recipient progress (atomic replace of ID.state).

        ``data`` is ``envelope.to_json()`` taken earlier, when the caller
        writes from a thread while the envelope may still change.
        """
        temporary = self.tmp / f"{envelope.id}.{secrets.token_hex(4)}.state"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data if data is not None else envelope.to_json())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, self.queue / f"{envelope.id}.state")
        except OSError as ex:
            raise _wrap(ex, "save state") from ex

    def remove_state(self, queue_id: str) -> None:
        """Remove a queued message's state file, if it has one."""
        try:
            (self.queue / f"{queue_id}.state").unlink()
        except FileNotFoundError:
            pass

    def remove(self, queue_id: str, directory: Path | None = None) -> None:
        """Forget a finished message (its state; its file, kept in ``free/`` for reuse)."""
        directory = directory or self.queue
        try:
            (directory / f"{queue_id}.state").unlink()
        except FileNotFoundError:
            pass
        message = directory / f"{queue_id}.msg"
        try:
            if self._room_in_free() and message.stat().st_size <= FREE_MAX_BYTES:
                os.rename(message, self.free / queue_id)
                self._free_count += 1
                return
            message.unlink()
        except FileNotFoundError:
            pass

    def scrub_free(self, older_than: float | None = None) -> int:
        """Empty (truncate) files in ``free/`` not reused for ``older_than`` seconds.

        Their bytes are delivered messages, never read again: a busy spool
        reuses them within seconds, a quiet one should not keep them. A file a
        writer takes meanwhile (renamed out of ``free/``) is left alone; names in
        ``free/`` are queue ids, never given twice. ``older_than`` defaults to
        ``FREE_SCRUB_SECONDS``. Returns how many were emptied.
        """
        cutoff = time.time() - (FREE_SCRUB_SECONDS if older_than is None else older_than)
        emptied = 0
        try:
            entries = list(os.scandir(self.free))
        except OSError:
            return 0
        for entry in entries:
            try:
                status = entry.stat()
                if status.st_size and status.st_ctime <= cutoff:  # a rename sets ctime
                    os.truncate(entry.path, 0)
                    emptied += 1
            except OSError:
                continue
        return emptied

    def _room_in_free(self) -> bool:
        """Return whether ``free/`` holds fewer than ``FREE_LIMIT`` files (recounted each second)."""
        now = time.monotonic()
        if now - self._free_counted_at > FREE_RECOUNT_SECONDS:
            try:
                self._free_count = sum(1 for _ in os.scandir(self.free))
            except OSError:
                return False
            self._free_counted_at = now
        return self._free_count < FREE_LIMIT

    # Reading --------------------------------------------------------------

    def read(self, queue_id: str, directory: Path | None = None) -> tuple[Envelope, bytes]:
        """Return a message's current envelope (state applied) and its bytes."""
        directory = directory or self.queue
        data = (directory / f"{queue_id}.msg").read_bytes()
        envelope, offset = self._parse_header(data, queue_id)
        state = self._read_state(queue_id, directory)
        return (state or envelope), data[offset:]

    def read_envelope(self, queue_id: str, directory: Path | None = None) -> Envelope:
        """Return a message's current envelope without its body."""
        directory = directory or self.queue
        with (directory / f"{queue_id}.msg").open("rb") as handle:
            head = handle.readline()
            length = self._length(head, queue_id)
            envelope = _own(Envelope.from_dict(json.loads(handle.read(length))), queue_id)
        return self._read_state(queue_id, directory) or envelope

    def read_body(self, queue_id: str, directory: Path | None = None) -> bytes:
        """Return the message bytes only."""
        data = ((directory or self.queue) / f"{queue_id}.msg").read_bytes()
        return data[self._parse_header(data, queue_id)[1]:]

    @staticmethod
    def _length(head: bytes, queue_id: str) -> int:
        if not head.startswith(MAGIC):
            raise SpoolError(f"spool file {queue_id} is not a SwiftMail spool file")
        return int(head[len(MAGIC):].strip())

    def _parse_header(self, data: bytes, queue_id: str) -> tuple[Envelope, int]:
        newline = data.index(b"\n")
        length = self._length(data[: newline + 1], queue_id)
        start = newline + 1
        envelope = _own(Envelope.from_dict(json.loads(data[start : start + length])), queue_id)
        return envelope, start + length

    @staticmethod
    def _read_state(queue_id: str, directory: Path) -> Envelope | None:
        try:
            return Envelope.from_dict(
                json.loads((directory / f"{queue_id}.state").read_bytes())
            )
        except (OSError, ValueError, TypeError, KeyError):
            # NOTE: a missing or torn state file falls back to the envelope
            # written with the message: at worst a recipient is retried.
            return None

    def scan(self, directory: Path | None = None) -> Iterator[str]:
        """Yield the ids of every message in ``queue/`` (or ``directory``)."""
        for entry in os.scandir(directory or self.queue):
            if entry.name.endswith(".msg"):
                yield entry.name[:-4]

    def take_new(self) -> list[str]:
        """Return and forget the ids announced in ``new/`` (single and batch files)."""
        ids = []
        for entry in os.scandir(self.new):
            if entry.name.endswith(ANNOUNCEMENT_SUFFIX):
                try:
                    with open(entry.path, "rb") as handle:
                        ids.extend(handle.read().decode("ascii", "replace").split())
                except OSError:
                    continue  # only a hint: the periodic full scan finds the messages
            else:
                ids.append(entry.name)
            try:
                os.unlink(entry.path)
            except OSError:
                pass
        return ids

    def clear_tmp(self, older_than: float = TMP_STALE_SECONDS) -> int:
        """Delete half-written files left by a crash; return how many.

        Only files untouched for ``older_than`` seconds: another process may be
        writing into this spool right now (a hand-off worker, a ``--no-deliver``
        intake), and a relay starting must not delete its file mid-write.
        """
        removed = 0
        cutoff = time.time() - older_than
        for entry in os.scandir(self.tmp):
            try:
                status = entry.stat()
                # NOTE: ctime too: a file taken from free/ keeps its old mtime until written.
                if max(status.st_mtime, status.st_ctime) > cutoff:
                    continue
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
        return removed

    # Hold and release ---------------------------------------------------

    def move(self, queue_id: str, source: Path, target: Path) -> None:
        """Move a message (and its state) between queue/ and hold/."""
        state = source / f"{queue_id}.state"
        if state.exists():
            os.rename(state, target / f"{queue_id}.state")
        os.rename(source / f"{queue_id}.msg", target / f"{queue_id}.msg")
        _fsync_dir(target)
