"""The device's on-disk outbox: every telemetry report, detection and event waits here until the broker
has acknowledged it (PUBACK), so a broker or network outage loses nothing.

Why SQLite in WAL mode rather than append-only segment files: a message is removed *out of order*
relative to how segment files are written (a PUBACK for message 7 may arrive before the one for 5, and
the "drop oldest telemetry first" policy deletes from the middle of the queue). SQLite gives that in one
indexed ``DELETE``, makes every put and every removal one atomic, fsynced transaction (WAL +
``synchronous=FULL``: a crash or power cut leaves either the whole message or none of it), needs no
compaction code of ours, ships with Python, and is readable with the ``sqlite3`` shell when debugging a
box. Segment files would need their own index, tombstones, compaction and torn-write handling.

Order and ids: ``seq`` is an ``AUTOINCREMENT`` key, so it grows monotonically for the life of the
file (never reused, also across reboots); ``epoch`` is a random id made when the file is created. The
message id is ``"{epoch}:{seq}"``: unique per device, stable across re-sends (the receiver
de-duplicates on it) and ordered per device.

Bounds and policy (sizes count payload + topic bytes):

- above ``max_bytes`` (the soft limit) the oldest *telemetry* is dropped to make room: a telemetry report
  is an aggregate that newer reports supersede; detections and events are still accepted;
- above ``hard_max_bytes`` the oldest message of the lowest class goes: telemetry, then events, then
  detections (the oldest detection is dropped only when nothing else is left);
- every drop is counted per kind; :meth:`Outbox.drops` reads the counts and :meth:`Outbox.forget_drops`
  subtracts them once the telemetry report that carries them is safely queued (a report that could not be
  written, on a full disk say, leaves the counts to the next one, and is counted itself);
- a message that does not fit at all (bigger than the hard limit), or a failing disk (full, read-only,
  I/O error), drops that one message, counts it and records :attr:`Outbox.last_error`; ``put`` never
  raises for these, so a full disk cannot crash the agent.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekws.agent.mqtt import DROP_ORDER

KINDS = DROP_ORDER  # the queued message kinds (agent/mqtt); the first listed is dropped first
_PRIORITY = {kind: i for i, kind in enumerate(KINDS)}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, seq);
CREATE TABLE IF NOT EXISTS drops (kind TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Queued:
    """One message waiting in the outbox."""

    seq: int
    kind: str
    topic: str
    payload: bytes


class Outbox:
    """A bounded, durable FIFO of outgoing MQTT messages (thread-safe)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 32 * 2**20,
        hard_max_bytes: int = 64 * 2**20,
        durable: bool = True,
    ) -> None:
        if not 0 < max_bytes <= hard_max_bytes:
            raise ValueError(
                f"outbox limits must satisfy 0 < max_bytes <= hard_max_bytes, got {max_bytes} and "
                f"{hard_max_bytes}; raise hard_max_bytes"
            )
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.hard_max_bytes = hard_max_bytes
        self.last_error: str | None = None
        self._lock = threading.Lock()
        try:
            if self.path.is_dir():
                raise sqlite3.OperationalError("it is a folder, not a file")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('epoch', ?)", (uuid.uuid4().hex[:12],))
                row = self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            self.epoch: str = row[0]
            seq_row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            self._max_seq = int(seq_row[0]) if seq_row else 0
            self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0])
            self._drops = {k: 0 for k in KINDS}
            for kind, count in self._db.execute("SELECT kind, count FROM drops"):
                self._drops[kind] = self._drops.get(kind, 0) + int(count)
        except (sqlite3.Error, OSError) as exc:
            raise OSError(
                f"cannot open the telemetry outbox {self.path} ({exc}); check that its folder is writable "
                "or point [telemetry.mqtt] outbox elsewhere"
            ) from exc

    # ---- producer side -------------------------------------------------------------------------------
    def put(self, kind: str, topic: str, payload: dict[str, Any]) -> str | None:
        """Store ``payload`` (a dict; ``id`` and ``seq`` are filled in) durably; return its message id.

        Returns None when the message could not be stored (too big, disk full or failing): the drop is
        counted and :attr:`last_error` says why. Never raises for those.
        """
        if kind not in _PRIORITY:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.execute(
                    "INSERT INTO outbox (kind, topic, payload, size, created) VALUES (?, ?, x'', 0, ?)",
                    (kind, topic, time.time()),
                )
                seq = int(cur.lastrowid or 0)
                self._max_seq = max(self._max_seq, seq)
                msg_id = f"{self.epoch}:{seq}"
                body = json.dumps({**payload, "id": msg_id, "seq": seq}, separators=(",", ":")).encode()
                size = len(body) + len(topic)
                if size > self.hard_max_bytes:
                    self._db.execute("ROLLBACK")
                    return self._lost(kind, f"message of {size} B is larger than the outbox hard limit")
                victims = self._victims(kind, size)
                if victims is None:
                    self._db.execute("ROLLBACK")
                    return self._lost(kind, f"outbox full ({self._bytes} B of {self.hard_max_bytes} B)")
                for victim_seq, victim_kind, _ in victims:
                    self._db.execute("DELETE FROM outbox WHERE seq = ?", (victim_seq,))
                    self._db.execute(
                        "INSERT INTO drops VALUES (?, 1) ON CONFLICT (kind) DO UPDATE SET count = count + 1",
                        (victim_kind,),
                    )
                self._db.execute("UPDATE outbox SET payload = ?, size = ? WHERE seq = ?", (body, size, seq))
                self._db.execute("COMMIT")
                for _, victim_kind, victim_size in victims:
                    self._drops[victim_kind] += 1
                    self._bytes -= victim_size
                self._bytes += size
                return msg_id
            except (sqlite3.Error, OSError) as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0])
                return self._lost(kind, f"cannot write the outbox {self.path}: {exc}")

    def _victims(self, kind: str, size: int) -> list[tuple[int, str, int]] | None:
        """Messages to drop (oldest first, by the policy) so that ``size`` more bytes fit; None: no fit."""
        victims: list[tuple[int, str, int]] = []
        if kind == "telemetry":  # soft limit: telemetry makes room for telemetry by dropping telemetry
            victims += self._oldest(("telemetry",), self._bytes + size - self.max_bytes, victims)
        # hard limit: a message may push out its own class and the classes dropped before it
        allowed = KINDS[: _PRIORITY[kind] + 1]
        victims += self._oldest(allowed, self._freed_needed(victims, size), victims)
        return None if self._freed_needed(victims, size) > 0 else victims

    def _freed_needed(self, victims: list[tuple[int, str, int]], size: int) -> int:
        return self._bytes - sum(v[2] for v in victims) + size - self.hard_max_bytes

    def _oldest(
        self, kinds: tuple[str, ...], need: int, taken: list[tuple[int, str, int]]
    ) -> list[tuple[int, str, int]]:
        out: list[tuple[int, str, int]] = []
        skip = {v[0] for v in taken}
        freed = 0
        for kind in kinds:
            if freed >= need:
                break
            rows = self._db.execute(
                "SELECT seq, size FROM outbox WHERE kind = ? AND size > 0 ORDER BY seq", (kind,)
            )
            for seq, size in rows:
                if freed >= need:
                    break
                if seq not in skip:
                    out.append((int(seq), kind, int(size)))
                    freed += int(size)
        return out

    def _lost(self, kind: str, why: str) -> str | None:
        self._drops[kind] += 1
        self.last_error = why
        return None

    def count_drop(self, kind: str, why: str) -> None:
        """Count a message of ``kind`` that was lost before it reached the outbox (e.g. a schema error)."""
        with self._lock:
            self._lost(kind, why)

    # ---- sender side ---------------------------------------------------------------------------------
    def after(self, seq: int, limit: int) -> list[Queued]:
        """Up to ``limit`` messages with a sequence number above ``seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, topic, payload FROM outbox WHERE seq > ? AND size > 0 "
                "ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [Queued(int(s), k, t, bytes(p)) for s, k, t, p in rows]

    def ack(self, seq: int) -> None:
        """The broker acknowledged message ``seq``: remove it."""
        with self._lock:
            try:
                cur = self._db.execute("DELETE FROM outbox WHERE seq = ? RETURNING size", (seq,))
                row = cur.fetchone()
                if row is not None:
                    self._bytes -= int(row[0])
            except sqlite3.Error as exc:  # the message stays and is re-sent; the receiver de-duplicates
                self.last_error = f"cannot remove message {seq} from the outbox {self.path}: {exc}"

    def ack_many(self, seqs: list[int]) -> int:
        """The receiver stored these messages: remove them; returns how many went."""
        removed = 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for seq in seqs:
                    cur = self._db.execute("DELETE FROM outbox WHERE seq = ? RETURNING size", (seq,))
                    row = cur.fetchone()
                    if row is not None:
                        self._bytes -= int(row[0])
                        removed += 1
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0])
                self.last_error = f"cannot remove acknowledged messages from the outbox {self.path}: {exc}"
                return 0
        return removed

    def queued_seqs(self) -> list[int]:
        """The sequence numbers of every queued message."""
        with self._lock:
            return [int(r[0]) for r in self._db.execute("SELECT seq FROM outbox WHERE size > 0")]

    @property
    def max_seq(self) -> int:
        """The highest sequence number ever given out (0 for a new outbox)."""
        return self._max_seq

    def drops(self) -> dict[str, int]:
        """Drops per kind not yet reported (see :meth:`forget_drops`)."""
        with self._lock:
            return dict(self._drops)

    def forget_drops(self, reported: dict[str, int]) -> None:
        """These drops are now carried by a queued telemetry report: subtract them (also on disk)."""
        with self._lock:
            for kind, n in reported.items():
                if n and kind in self._drops:
                    self._drops[kind] = max(0, self._drops[kind] - n)
            try:
                self._db.executemany(
                    "UPDATE drops SET count = MAX(count - ?, 0) WHERE kind = ?",
                    [(n, kind) for kind, n in reported.items() if n],
                )
            except sqlite3.Error as exc:
                self.last_error = f"cannot update drop counts in {self.path}: {exc}"

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE size > 0").fetchone()[0])

    @property
    def bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._db.close()
