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
- ``alerts``: raised and resolved alerts.

:meth:`FleetStore.write` is one transaction. When the database is unreachable it raises :class:`StoreError`
and writes nothing (the caller keeps the batch and retries); when it refuses a row (bad data that passed
validation: a bug), the rows are written one by one and the refused ones become dead letters, so one row
never blocks the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
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

    def _create_tables(self) -> None:
        """CREATE TABLE IF NOT EXISTS; a second monitor creating them at the same moment is not an error."""
        try:
            metadata.create_all(self.engine)
        except (sa.exc.ProgrammingError, sa.exc.IntegrityError):
            metadata.create_all(self.engine)  # the other one won the race: the tables exist now

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
    ) -> int:
        """Insert message rows (by kind), upsert device states, record alerts and dead letters, in one
        transaction. Returns how many message rows the database refused (they were parked as dead letters);
        raises :class:`StoreError` (nothing written) when the database cannot be reached."""
        dead = list(dead or [])
        try:
            with self.engine.begin() as conn:
                self._write(conn, rows, device_states, alert_rows, dead)
            return 0
        except _UNAVAILABLE as exc:
            raise StoreError(f"cannot write to the fleet store: {_short(exc)}") from exc
        except _REFUSED as exc:
            log.error("the fleet store refused a batch (%s); writing it row by row", _short(exc))
        return self._write_row_by_row(rows, device_states, alert_rows, dead)

    def _write(
        self,
        conn: sa.Connection,
        rows: dict[str, list[dict[str, Any]]],
        device_states: list[dict[str, Any]],
        alert_rows: list[dict[str, Any]],
        dead: list[dict[str, Any]],
    ) -> None:
        for kind, batch in rows.items():
            if batch:
                conn.execute(self._insert[kind], batch)
        self._upsert(
            conn,
            devices,
            ("fleet", "device"),
            [
                {"fleet": s["fleet"], "device": s["device"], "state": s, "updated": s.get("last_seen") or 0.0}
                for s in device_states
            ],
        )
        for alert in alert_rows:
            if alert.get("resolved") is None:
                conn.execute(alerts.insert().values(**alert))
            else:
                conn.execute(
                    alerts.update()
                    .where(
                        (alerts.c.fleet == alert["fleet"])
                        & (alerts.c.device == alert["device"])
                        & (alerts.c.kind == alert["kind"])
                        & alerts.c.resolved.is_(None)
                    )
                    .values(resolved=alert["resolved"])
                )
        if dead:
            conn.execute(self._insert_ignore(dead_letters), dead)
            newest = sa.select(sa.func.max(dead_letters.c.pk)).scalar_subquery()
            conn.execute(dead_letters.delete().where(dead_letters.c.pk <= newest - self.dead_letter_keep))

    def _write_row_by_row(
        self,
        rows: dict[str, list[dict[str, Any]]],
        device_states: list[dict[str, Any]],
        alert_rows: list[dict[str, Any]],
        dead: list[dict[str, Any]],
    ) -> int:
        """Every item in its own transaction: what the database refuses is logged and skipped, a refused
        message row becomes a dead letter. Re-running is harmless (inserts ignore what is there)."""
        refused: list[dict[str, Any]] = []

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

        each(
            [(k, r) for k, batch in rows.items() for r in batch],
            lambda conn, item: conn.execute(self._insert[item[0]], [item[1]]),
            "a message",
        )
        each(device_states, lambda conn, s: self._write(conn, {}, [s], [], []), "a device state")
        each(alert_rows, lambda conn, a: self._write(conn, {}, [], [a], []), "an alert")
        each([*dead, *refused], lambda conn, d: self._write(conn, {}, [], [], [d]), "a dead letter")
        return len(refused)

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

    def count(self, kind: str, fleet: str | None = None, device: str | None = None) -> int:
        table = dead_letters if kind == "dead_letter" else TABLES[kind]
        query = sa.select(sa.func.count()).select_from(table)
        if fleet is not None:
            query = query.where(table.c.fleet == fleet)
        if device is not None:
            query = query.where(table.c.device == device)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

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
