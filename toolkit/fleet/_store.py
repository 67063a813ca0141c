"""The fleet monitor's store: SQLAlchemy Core over any database URL.

SQLite (``sqlite:///fleet.db``, the default; ``sqlite://`` in memory) for one machine, PostgreSQL
(``postgresql+psycopg://…``) when a fleet outgrows it: the same tables, the same code. Every message
table has a unique ``(fleet, device, msg_id)`` key, so a message seen twice (QoS 1 re-delivery, a device
replaying its outbox) is stored once even across monitor restarts.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

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
TABLES = {"telemetry": telemetry, "detection": detections, "event": events}


class FleetStore:
    """Batched writes of what the monitor ingests; :meth:`write` runs one transaction."""

    def __init__(self, url: str = "sqlite:///fleet.db") -> None:
        try:
            made = sa.engine.make_url(url)
            if made.get_backend_name() == "sqlite" and made.database in (None, "", ":memory:"):
                # one shared in-memory database for every thread (the default pool gives one per thread)
                self.engine = sa.create_engine(
                    url, poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False}
                )
            else:
                self.engine = sa.create_engine(url)
            metadata.create_all(self.engine)
        except (sa.exc.ArgumentError, sa.exc.OperationalError, ImportError) as exc:
            raise ValueError(
                f"cannot open the fleet database {url!r} ({exc}); give a SQLAlchemy URL such as "
                "sqlite:///fleet.db or postgresql+psycopg://user@host/fleet (with its driver installed)"
            ) from exc
        self._insert = {name: self._insert_ignore(table) for name, table in TABLES.items()}

    def _insert_ignore(self, table: sa.Table) -> Any:
        """INSERT … ON CONFLICT DO NOTHING in the engine's dialect (the unique message key de-duplicates)."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table).on_conflict_do_nothing()
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        return table.insert()  # other databases: the in-memory de-duplication is the only one

    def write(
        self,
        rows: dict[str, list[dict[str, Any]]],
        device_states: list[dict[str, Any]],
        alert_rows: list[dict[str, Any]],
    ) -> None:
        """Insert message rows (by kind), upsert device states and record alerts, in one transaction."""
        with self.engine.begin() as conn:
            for kind, batch in rows.items():
                if batch:
                    conn.execute(self._insert[kind], batch)
            for state in device_states:
                key = (devices.c.fleet == state["fleet"]) & (devices.c.device == state["device"])
                values = {"state": state, "updated": state.get("last_seen") or 0.0}
                if conn.execute(devices.update().where(key).values(**values)).rowcount == 0:
                    conn.execute(
                        devices.insert().values(fleet=state["fleet"], device=state["device"], **values)
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

    def device_states(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r.state) for r in conn.execute(sa.select(devices.c.state))]

    def count(self, kind: str, fleet: str | None = None, device: str | None = None) -> int:
        table = TABLES[kind]
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

    def dispose(self) -> None:
        self.engine.dispose()


def payload_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))
