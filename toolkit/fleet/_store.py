"""The fleet monitor's store: SQLAlchemy Core over any database URL.

SQLite (``sqlite:///fleet.db``, the default; ``sqlite://`` in memory) for one machine, PostgreSQL
(``postgresql+psycopg://…``, the ``fleet`` extra installs psycopg 3) when a fleet outgrows it: the same
tables, the same code, tested on both. Several monitors may share one PostgreSQL store: every write is
idempotent.

- Message tables (telemetry, detections, events) have a unique ``(fleet, device, msg_id)`` key, so a message
  seen twice (QoS 1 re-delivery, a device replaying its outbox, two monitors) is stored once.
- ``devices``: each device's last state, upserted.
- ``dead_letters``: messages the monitor refused (docs/mqtt.md, "Validation and dead letters"), keyed by the
  sha256 of topic and payload, the newest ``dead_letter_keep`` kept.
- ``device_groups``: the fleet registry, which device belongs to which rollout group; written by the
  operator (``edgekws fleet group``), read by the monitor and ``edgekws fleet deploy --group``.
- ``alerts``: raised and resolved alerts; at most one active alert per (fleet, device, kind) (a partial
  unique index), so an alert that several monitors raise is stored -- and fired -- once.
- ``monitors``: the monitors of a shared subscription (``fleet serve --shared``), their heartbeats, and
  which monitor adopted the broker session of one that died.

Device states are merged, not overwritten: a monitor writes what it learnt since its last batch and the
caller's ``merge`` combines it with the stored row inside the transaction (the row locked, on PostgreSQL),
so monitors that each see part of a device's messages build one state. Message counts come from the rows
the database really inserted (``RETURNING``): a message that two monitors saw is counted once.

:meth:`FleetStore.write` is one transaction. When the database is unreachable it raises :class:`StoreError`
and writes nothing (the caller keeps the batch and retries); when it refuses a row (bad data that passed
validation: a bug), the rows are written one by one and the refused ones become dead letters, so one row
never blocks the rest.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

log = logging.getLogger("edgekws.fleet")

metadata = sa.MetaData()

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("fleet", sa.String(128), primary_key=True),
    sa.Column("device", sa.String(128), primary_key=True),
    sa.Column("state", sa.JSON, nullable=False),  # DeviceState.to_dict()
    sa.Column("updated", sa.Float, nullable=False),
)


def _message_table(name: str, *columns: sa.Column[Any]) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fleet", sa.String(128), nullable=False),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("msg_id", sa.String(160), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        *columns,
        sa.Column("payload", sa.Text, nullable=False),
        sa.UniqueConstraint("fleet", "device", "msg_id", name=f"{name}_msg"),
        sa.Index(f"{name}_device_ts", "fleet", "device", "ts"),
    )


telemetry = _message_table(
    "telemetry",
    sa.Column("bundle_version", sa.String(64)),
    sa.Column("backend", sa.String(64)),
    sa.Column("latency_p50_ms", sa.Float),
    sa.Column("latency_p95_ms", sa.Float),
    sa.Column("energy_mj", sa.Float),
    sa.Column("energy_method", sa.String(64)),
)
detections = _message_table(
    "detections",
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("confidence", sa.Float),
)
events = _message_table(
    "events",
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("level", sa.String(16)),
)
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("fleet", sa.String(128), nullable=False),
    sa.Column("device", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("raised", sa.Float, nullable=False),
    sa.Column("resolved", sa.Float),
)
#: One active alert per (fleet, device, kind): what several monitors raise is inserted once.
alerts_active = sa.Index(
    "alerts_active",
    alerts.c.fleet,
    alerts.c.device,
    alerts.c.kind,
    unique=True,
    sqlite_where=alerts.c.resolved.is_(None),
    postgresql_where=alerts.c.resolved.is_(None),
)
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),  # sha256 of topic and payload
    sa.Column("received", sa.Float, nullable=False),
    sa.Column("topic", sa.String(512), nullable=False),  # escaped and cut when odd
    sa.Column("fleet", sa.String(128)),  # None when the topic's ids are invalid
    sa.Column("device", sa.String(128)),
    sa.Column("kind", sa.String(16)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),  # of the whole payload
    sa.Column("payload", sa.LargeBinary, nullable=False),  # its first DEAD_LETTER_PAYLOAD_MAX bytes
)
device_groups = sa.Table(
    "device_groups",
    metadata,
    sa.Column("fleet", sa.String(128), primary_key=True),
    sa.Column("device", sa.String(128), primary_key=True),
    sa.Column("group_name", sa.String(128), nullable=False),
    sa.Column("assigned", sa.Float, nullable=False),
    sa.Index("device_groups_group", "group_name"),
)
monitors = sa.Table(
    "monitors",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("share_group", sa.String(128), nullable=False),
    sa.Column("host", sa.String(256), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("adopted_by", sa.String(128)),  # the monitor draining this one's broker session
)
#: Indexes added to stores made before they existed (CREATE INDEX IF NOT EXISTS at open).
_LATE_INDEXES = (alerts_active, sa.Index("detections_ts", detections.c.ts))
TABLES = {"telemetry": telemetry, "detection": detections, "event": events}
DEAD_LETTER_PAYLOAD_MAX = 64 * 1024
DEAD_LETTER_REASON_MAX = 2000

# Failures of the connection (retry later) as opposed to a row the database refuses (park it).
_UNAVAILABLE = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)
_REFUSED = (sa.exc.SQLAlchemyError, ValueError, TypeError, OverflowError)


#: How a device state sent by a monitor becomes the stored one: (stored or None, sent, inserted per kind).
Merge = Callable[[Any, dict[str, Any], dict[str, int]], dict[str, Any]]


@dataclass
class WriteResult:
    """What one :meth:`FleetStore.write` did."""

    inserted: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # new message rows
    states: list[dict[str, Any]] = field(default_factory=list)  # device states as stored (merged)
    raised: list[dict[str, Any]] = field(default_factory=list)  # alerts inserted (not already active)
    resolved: list[dict[str, Any]] = field(default_factory=list)  # alerts that were active until now
    parked: int = 0  # message rows the database refused (parked as dead letters)


class StoreError(RuntimeError):
    """The store could not be written (database unreachable, locked, full); nothing of the batch was lost:
    the caller keeps it and tries again."""


def plain_text(text: str, limit: int) -> str:
    """``text`` for a column: printable characters as they are, anything else escaped, at most ``limit``."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dead_letter(
    topic: str,
    payload: bytes,
    reason: str,
    *,
    fleet: str | None = None,
    device: str | None = None,
    kind: str | None = None,
    received: float | None = None,
) -> dict[str, Any]:
    """A ``dead_letters`` row: the refused message (its first bytes), where it came from and why."""
    return {
        "digest": hashlib.sha256(topic.encode("utf-8", "backslashreplace") + b"\0" + payload).hexdigest(),
        "received": time.time() if received is None else received,
        "topic": plain_text(topic, 512),
        "fleet": fleet,
        "device": device,
        "kind": kind,
        "reason": plain_text(reason, DEAD_LETTER_REASON_MAX),
        "size": len(payload),
        "payload": bytes(payload[:DEAD_LETTER_PAYLOAD_MAX]),
    }


class FleetStore:
    """Batched writes of what the monitor ingests (:meth:`write`, one transaction), and the fleet registry."""

    def __init__(
        self, url: str = "sqlite:///fleet.db", *, must_exist: bool = False, dead_letter_keep: int = 1000
    ) -> None:
        self.url = url
        self.dead_letter_keep = dead_letter_keep
        try:
            made = sa.engine.make_url(url)
            memory = made.get_backend_name() == "sqlite" and made.database in (None, "", ":memory:")
            if (
                must_exist
                and made.get_backend_name() == "sqlite"
                and (memory or not Path(made.database or "").exists())
            ):
                raise ValueError(
                    f"there is no fleet store at {url!r}: give the --db of `edgekws fleet serve` "
                    "(default sqlite:///fleet.db, relative to where it runs)"
                )
            # NaN and Infinity are not JSON: refuse them rather than store what no reader can parse
            serializer: Callable[[Any], str] = lambda obj: json.dumps(obj, allow_nan=False)  # noqa: E731
            if memory:
                # one shared in-memory database for every thread (the default pool gives one per thread)
                self.engine = sa.create_engine(
                    url,
                    poolclass=sa.pool.StaticPool,
                    connect_args={"check_same_thread": False},
                    json_serializer=serializer,
                )
            else:
                self.engine = sa.create_engine(url, json_serializer=serializer, pool_pre_ping=True)
            self._create_tables()
        except (sa.exc.ArgumentError, sa.exc.OperationalError, sa.exc.InterfaceError, ImportError) as exc:
            raise ValueError(
                f"cannot open the fleet database {url!r} ({exc}); give a SQLAlchemy URL such as "
                "sqlite:///fleet.db or postgresql+psycopg://user@host/fleet (with its driver installed)"
            ) from exc
        self.dialect = self.engine.dialect.name
        self._insert = {name: self._insert_ignore(table) for name, table in TABLES.items()}
        self._sqlite_file = None if memory or self.dialect != "sqlite" else Path(made.database or "")
        self._lock_fd: int | None = None

    def claim_ingest(self, shared: bool) -> None:
        """Make sure one more monitor may ingest into this store, or raise ValueError saying why not: SQLite
        holds one monitor (a lock file next to the database, released when the process ends, however it
        ends); monitors of a shared subscription need a store they all reach (PostgreSQL)."""
        if self.dialect != "sqlite":
            return
        if shared:
            raise ValueError(
                "--shared needs a store that every monitor of the group reaches: PostgreSQL "
                "(--db postgresql+psycopg://user@host/fleet); SQLite holds one monitor"
            )
        if self._sqlite_file is None or self._lock_fd is not None:
            return
        lock = self._sqlite_file.with_name(self._sqlite_file.name + "-monitor.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ValueError(
                f"another fleet monitor (pid {holder}) already ingests into the SQLite store {self.url}; "
                "SQLite holds one monitor: stop that one, or run several monitors on PostgreSQL with "
                '--shared GROUP (docs/mqtt.md, "Several monitors")'
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _create_tables(self) -> None:
        """CREATE TABLE IF NOT EXISTS; a second monitor creating them at the same moment is not an error."""
        try:
            metadata.create_all(self.engine)
        except (sa.exc.ProgrammingError, sa.exc.IntegrityError):
            metadata.create_all(self.engine)  # the other one won the race: the tables exist now
        for index in _LATE_INDEXES:
            try:
                index.create(self.engine, checkfirst=True)
            except (sa.exc.ProgrammingError, sa.exc.IntegrityError) as exc:
                # a race with another monitor, or two active alerts an older monitor left: go on without
                log.warning("could not add the index %s to the fleet store: %s", index.name, _short(exc))

    def _dialect_insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT with ON CONFLICT (SQLite, PostgreSQL), or None on other databases."""
        if self.dialect == "sqlite":
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(table)
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        return None

    def _insert_ignore(self, table: sa.Table) -> Any:
        """INSERT … ON CONFLICT DO NOTHING (the table's unique key de-duplicates)."""
        stmt = self._dialect_insert(table)
        return table.insert() if stmt is None else stmt.on_conflict_do_nothing()  # others: memory de-dup only

    def _upsert(
        self, conn: sa.Connection, table: sa.Table, keys: tuple[str, ...], rows: list[dict[str, Any]]
    ) -> None:
        """INSERT … ON CONFLICT (keys) DO UPDATE (update-then-insert on other databases)."""
        if not rows:
            return
        stmt = self._dialect_insert(table)
        if stmt is not None:
            values = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
            conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=values), rows)
            return
        for row in rows:
            match = sa.and_(*(table.c[k] == row[k] for k in keys))
            if conn.execute(table.update().where(match).values(**row)).rowcount == 0:
                conn.execute(table.insert().values(**row))

    # ---- what the monitor writes --------------------------------------------------------------------
    def write(
        self,
        rows: dict[str, list[dict[str, Any]]],
        device_states: list[dict[str, Any]],
        alert_rows: list[dict[str, Any]],
        dead: list[dict[str, Any]] | None = None,
        merge: Merge | None = None,
    ) -> WriteResult:
        """Insert message rows (by kind), merge device states, record alerts and dead letters, in one
        transaction; raises :class:`StoreError` (nothing written) when the database cannot be reached.

        ``merge(stored, state, inserted)`` makes the row to store from the stored state (None for a new
        device), the state the monitor sends and how many of its messages of each kind the database inserted
        (``{kind: n}``, duplicates left out); without it the sent state replaces the stored one."""
        dead = list(dead or [])
        result = WriteResult()
        try:
            with self.engine.begin() as conn:
                self._write(conn, rows, device_states, alert_rows, dead, merge, result)
            return result
        except _UNAVAILABLE as exc:
            raise StoreError(f"cannot write to the fleet store: {_short(exc)}") from exc
        except _REFUSED as exc:
            log.error("the fleet store refused a batch (%s); writing it row by row", _short(exc))
        return self._write_row_by_row(rows, device_states, alert_rows, dead, merge)

    def _write(
        self,
        conn: sa.Connection,
        rows: dict[str, list[dict[str, Any]]],
        device_states: list[dict[str, Any]],
        alert_rows: list[dict[str, Any]],
        dead: list[dict[str, Any]],
        merge: Merge | None,
        result: WriteResult,
    ) -> None:
        for kind, batch in rows.items():
            if batch:
                self._insert_messages(conn, kind, batch, result)
        alert_rows = [*self._merge_states(conn, device_states, merge, result), *alert_rows]
        for alert in alert_rows:
            if alert.get("resolved") is None:
                new = conn.execute(self._insert_ignore(alerts).returning(alerts.c.pk), [alert]).first()
                if new is not None:
                    result.raised.append(alert)
            elif (
                conn.execute(
                    alerts.update()
                    .where(
                        (alerts.c.fleet == alert["fleet"])
                        & (alerts.c.device == alert["device"])
                        & (alerts.c.kind == alert["kind"])
                        & alerts.c.resolved.is_(None)
                    )
                    .values(resolved=alert["resolved"])
                ).rowcount
                > 0
            ):
                result.resolved.append(alert)
        if dead:
            conn.execute(self._insert_ignore(dead_letters), dead)
            newest = sa.select(sa.func.max(dead_letters.c.pk)).scalar_subquery()
            conn.execute(dead_letters.delete().where(dead_letters.c.pk <= newest - self.dead_letter_keep))

    def _insert_messages(
        self, conn: sa.Connection, kind: str, batch: list[dict[str, Any]], result: WriteResult
    ) -> None:
        """INSERT … ON CONFLICT DO NOTHING RETURNING: counts, per device, the rows that were new."""
        table = TABLES[kind]
        for r in conn.execute(self._insert[kind].returning(table.c.fleet, table.c.device), batch):
            counts = result.inserted.setdefault((r.fleet, r.device), {})
            counts[kind] = counts.get(kind, 0) + 1

    def _merge_states(
        self, conn: sa.Connection, states: list[dict[str, Any]], merge: Merge | None, result: WriteResult
    ) -> list[dict[str, Any]]:
        """Device states merged with the stored ones: the rows are made if missing, then read locked (in key
        order, so two monitors cannot deadlock each other), merged and written back. Returns the alerts the
        merge decided (a merged state's ``alerts``), to write in the same transaction."""
        if not states:
            return []
        keys = sorted({(s["fleet"], s["device"]) for s in states})
        by_key = {(s["fleet"], s["device"]): s for s in states}
        if merge is None:
            merged = [by_key[k] for k in keys]
        else:
            conn.execute(
                self._insert_ignore(devices),
                [{"fleet": f, "device": d, "state": {}, "updated": 0.0} for f, d in keys],
            )
            stored: dict[tuple[str, str], Any] = {}
            for chunk in range(0, len(keys), 500):
                query = (
                    sa.select(devices.c.fleet, devices.c.device, devices.c.state)
                    .where(sa.tuple_(devices.c.fleet, devices.c.device).in_(keys[chunk : chunk + 500]))
                    .order_by(devices.c.fleet, devices.c.device)
                    .with_for_update()
                )
                stored.update({(r.fleet, r.device): r.state for r in conn.execute(query)})
            merged = [merge(stored.get(k) or None, by_key[k], result.inserted.get(k, {})) for k in keys]
        decided = [a.to_dict() for s in merged for a in s.pop("alerts", [])]
        result.states = merged
        self._upsert(
            conn,
            devices,
            ("fleet", "device"),
            [
                {"fleet": s["fleet"], "device": s["device"], "state": s, "updated": s.get("last_seen") or 0.0}
                for s in merged
            ],
        )
        return decided

    def _write_row_by_row(
        self,
        rows: dict[str, list[dict[str, Any]]],
        device_states: list[dict[str, Any]],
        alert_rows: list[dict[str, Any]],
        dead: list[dict[str, Any]],
        merge: Merge | None,
    ) -> WriteResult:
        """Every item in its own transaction: what the database refuses is logged and skipped, a refused
        message row becomes a dead letter. Re-running is harmless (inserts ignore what is there)."""
        refused: list[dict[str, Any]] = []
        result = WriteResult()

        def each(items: Iterable[Any], write: Callable[[sa.Connection, Any], object], what: str) -> None:
            for item in items:
                try:
                    with self.engine.begin() as conn:
                        write(conn, item)
                except _UNAVAILABLE as exc:
                    raise StoreError(f"cannot write to the fleet store: {_short(exc)}") from exc
                except _REFUSED as exc:
                    log.error("the fleet store refused %s (%s)", what, _short(exc))
                    if what == "a message":
                        kind, row = item
                        refused.append(_dead_row(kind, row, exc))

        def one(conn: sa.Connection, states: list[Any], alert_rows: list[Any], dead: list[Any]) -> None:
            self._write(conn, {}, states, alert_rows, dead, merge, result)

        each(
            [(k, r) for k, batch in rows.items() for r in batch],
            lambda conn, item: self._insert_messages(conn, item[0], [item[1]], result),
            "a message",
        )
        states: list[dict[str, Any]] = []

        def state(conn: sa.Connection, sent: dict[str, Any]) -> None:
            one(conn, [sent], [], [])
            states.extend(result.states)

        each(device_states, state, "a device state")
        result.states = states
        each(alert_rows, lambda conn, a: one(conn, [], [a], []), "an alert")
        each([*dead, *refused], lambda conn, d: one(conn, [], [], [d]), "a dead letter")
        result.parked = len(refused)
        return result

    # ---- monitors of a shared subscription ------------------------------------------------------------
    def beat(self, client_id: str, group: str, host: str, pid: int) -> None:
        """Record that this monitor is alive (and owns its row again if another had adopted it)."""
        row = {
            "client_id": client_id,
            "share_group": group,
            "host": host[:256],
            "pid": pid,
            "heartbeat": time.time(),
            "adopted_by": None,
        }
        with self.engine.begin() as conn:
            self._upsert(conn, monitors, ("client_id",), [row])

    def adopt_silent(self, group: str, me: str, silent_s: float) -> list[str]:
        """Client ids of the monitors of ``group`` silent for over ``silent_s`` seconds that this monitor
        (``me``) now adopts: their heartbeat is renewed in its name, so no other monitor adopts them too."""
        now = time.time()
        with self.engine.connect() as conn:
            silent = conn.execute(
                sa.select(monitors.c.client_id).where(
                    (monitors.c.share_group == group)
                    & (monitors.c.client_id != me)
                    & (monitors.c.heartbeat < now - silent_s)
                )
            ).scalars()
            candidates = list(silent)
        adopted = []
        for client_id in candidates:
            with self.engine.begin() as conn:
                claim = (
                    monitors.update()
                    .where((monitors.c.client_id == client_id) & (monitors.c.heartbeat < now - silent_s))
                    .values(heartbeat=now, adopted_by=me)
                )
                if conn.execute(claim).rowcount == 1:
                    adopted.append(client_id)
        return adopted

    def adopted_by(self, client_id: str, me: str) -> bool:
        """Whether ``me`` still holds the adoption of ``client_id`` (its owner's next beat takes it back)."""
        query = sa.select(monitors.c.adopted_by).where(monitors.c.client_id == client_id)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one_or_none() == me

    def forget_monitor(self, client_id: str, adopted_by: str | None = None) -> None:
        """Remove a monitor's row (its own at a clean stop, or one whose session ``adopted_by`` drained)."""
        match = monitors.c.client_id == client_id
        if adopted_by is not None:
            match = match & (monitors.c.adopted_by == adopted_by)
        with self.engine.begin() as conn:
            conn.execute(monitors.delete().where(match))

    def monitor_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r._mapping) for r in conn.execute(sa.select(monitors).order_by(monitors.c.client_id))
            ]

    # ---- the fleet registry -------------------------------------------------------------------------
    def assign_group(self, group: str, members: list[tuple[str, str]]) -> None:
        """Put each (fleet, device) into ``group`` (a device is in one group at most)."""
        now = time.time()
        rows = [{"fleet": f, "device": d, "group_name": group, "assigned": now} for f, d in members]
        with self.engine.begin() as conn:
            self._upsert(conn, device_groups, ("fleet", "device"), rows)

    def unassign_group(self, members: list[tuple[str, str]]) -> int:
        """Take each (fleet, device) out of its group; returns how many had one."""
        n = 0
        with self.engine.begin() as conn:
            for f, d in members:
                match = (device_groups.c.fleet == f) & (device_groups.c.device == d)
                n += conn.execute(device_groups.delete().where(match)).rowcount
        return n

    def group_assignments(
        self, group: str | None = None, fleet: str | None = None
    ) -> dict[tuple[str, str], str]:
        """(fleet, device) -> group of every assigned device (of one group and/or fleet)."""
        query = sa.select(device_groups.c.fleet, device_groups.c.device, device_groups.c.group_name)
        if group is not None:
            query = query.where(device_groups.c.group_name == group)
        if fleet is not None:
            query = query.where(device_groups.c.fleet == fleet)
        with self.engine.connect() as conn:
            return {
                (r.fleet, r.device): r.group_name for r in conn.execute(query.order_by("fleet", "device"))
            }

    # ---- reading ------------------------------------------------------------------------------------
    def device_states(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r.state) for r in conn.execute(sa.select(devices.c.state)) if isinstance(r.state, dict)
            ]

    def active_alerts(self) -> list[dict[str, Any]]:
        """Alerts not yet resolved, oldest first."""
        query = sa.select(alerts).where(alerts.c.resolved.is_(None)).order_by(alerts.c.raised)
        with self.engine.connect() as conn:
            return [{k: v for k, v in r._mapping.items() if k != "pk"} for r in conn.execute(query)]

    def detections_since(self, since: float, until: float) -> dict[tuple[str, str], int]:
        """Detections per (fleet, device) whose device time lies in (since, until]."""
        query = (
            sa.select(detections.c.fleet, detections.c.device, sa.func.count())
            .where((detections.c.ts > since) & (detections.c.ts <= until))
            .group_by(detections.c.fleet, detections.c.device)
        )
        with self.engine.connect() as conn:
            return {(r[0], r[1]): int(r[2]) for r in conn.execute(query)}

    def count(self, kind: str, fleet: str | None = None, device: str | None = None) -> int:
        table = dead_letters if kind == "dead_letter" else TABLES[kind]
        query = sa.select(sa.func.count()).select_from(table)
        if fleet is not None:
            query = query.where(table.c.fleet == fleet)
        if device is not None:
            query = query.where(table.c.device == device)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def distinct_messages(self, kind: str) -> int:
        """How many different (fleet, device, message id) the table holds."""
        table = TABLES[kind]
        ids = sa.select(table.c.fleet, table.c.device, table.c.msg_id).distinct().subquery()
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(ids)).scalar_one())

    def message_ids(self, kind: str, fleet: str, device: str) -> list[str]:
        """Stored message ids of one device in arrival order."""
        table = TABLES[kind]
        query = (
            sa.select(table.c.msg_id)
            .where((table.c.fleet == fleet) & (table.c.device == device))
            .order_by(table.c.pk)
        )
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(query)]

    def dead_letter_rows(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters, newest first."""
        query = sa.select(dead_letters).order_by(dead_letters.c.pk.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def dispose(self) -> None:
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def _dead_row(kind: str, row: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """The dead letter of a message row the database refused."""
    fleet, device = str(row.get("fleet")), str(row.get("device"))
    return dead_letter(
        f"edgekws/v1/{fleet}/{device}/{kind}",
        str(row.get("payload", "")).encode("utf-8", "backslashreplace"),
        f"the store refused it: {_short(exc)}",
        fleet=fleet,
        device=device,
        kind=kind,
    )


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
