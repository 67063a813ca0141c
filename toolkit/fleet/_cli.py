"""`edgekws fleet …`: the fleet monitor's commands (thin over :mod:`edgekws.toolkit.fleet`)."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

_BROKER_HELP = "Broker URL: mqtt://[user[:password]@]host[:port] or mqtts://… for TLS."


def _broker_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--broker", "broker_url", default="mqtt://127.0.0.1:1883", show_default=True, help=_BROKER_HELP
        ),
        click.option(
            "--username",
            default=None,
            help="Broker user (overrides the URL's); the ACL expects edgekws-monitor.",
        ),
        click.option(
            "--password-env",
            default="EDGEKWS_MQTT_PASSWORD",
            show_default=True,
            help="Environment variable holding the broker password (keeps it out of ps).",
        ),
        click.option(
            "--ca-file",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="CA certificate that signed the broker's (TLS).",
        ),
        click.option(
            "--cert-file",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="Client certificate (TLS with require_certificate).",
        ),
        click.option(
            "--key-file",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="Client certificate's key.",
        ),
    ]
    for option in reversed(options):
        func = option(func)

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        from edgekws.agent.mqtt import BrokerUrl

        try:
            url = BrokerUrl.parse(kwargs.pop("broker_url"))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        username, env = kwargs.pop("username"), kwargs.pop("password_env")
        url = url.with_login(username, os.environ.get(env, url.password))
        tls = {k: kwargs.pop(k) for k in ("ca_file", "cert_file", "key_file")}
        return func(broker=url, tls=tls, **kwargs)

    return wrapper


_DB_HELP = "SQLAlchemy URL of the monitor's store (sqlite:///path, postgresql+psycopg://user@host/db)."


def _db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--db", default="sqlite:///fleet.db", show_default=True, help=_DB_HELP)(func)


def _open_store(db: str, must_exist: bool = False) -> Any:
    from edgekws.toolkit.fleet._store import FleetStore

    try:
        return FleetStore(db, must_exist=must_exist)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _read_token(token_file: Path | None, token_env: str) -> str | None:
    """The HTTP access token: the first line of --token-file, else the environment variable, else None."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"cannot read the token file {token_file}: {exc}") from exc
        if not token:
            raise click.ClickException(f"the token file {token_file} is empty; put a random token in it")
        return token
    return os.environ.get(token_env) or None


@click.group()
def fleet() -> None:
    """Watch a fleet of edge agents over MQTT: state, alerts, Prometheus metrics, dashboard.

    Example:

        edgekws fleet serve --broker mqtt://127.0.0.1:1883 --db sqlite:///fleet.db --port 9108
    """


@fleet.command()
@_broker_options
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the HTTP server listens on; beyond localhost it needs a token.")  # fmt: skip
@click.option(
    "--port", default=9108, show_default=True, type=int, help="HTTP port (/, /api/devices, /metrics)."
)
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File whose first line is the HTTP access token (clients send 'Authorization: Bearer "
              "TOKEN', or HTTP Basic with it as password).")  # fmt: skip
@click.option("--token-env", default="EDGEKWS_FLEET_TOKEN", show_default=True,
              help="Environment variable holding the token when no --token-file is given.")  # fmt: skip
@click.option(
    "--regression-threshold",
    default=0.2,
    show_default=True,
    type=float,
    help="Relative latency/energy increase after a rollout that raises an alert.",
)
@click.option("--shared", "shared_group", default=None, metavar="GROUP",
              help="Share the ingest with the other monitors of GROUP: an MQTT 5 shared subscription "
              "($share/GROUP/edgekws/v1/+/+/#) on one PostgreSQL --db; each monitor has its own "
              "--client-id.")  # fmt: skip
@click.option("--client-id", default=None,
              help="MQTT client id, kept across restarts (a restarted monitor resumes its broker session). "
              "Default: edgekws-fleet-monitor; with --shared, edgekws-fleet-GROUP-HOST-PORT.")  # fmt: skip
@click.option("--adopt-after", "adopt_after_s", default=15.0, show_default=True,
              type=click.FloatRange(min=3.0),
              help="With --shared: seconds of silence (no heartbeat in the store) after which another "
              "monitor adopts a monitor's broker session to ingest what the broker kept.")  # fmt: skip
def serve(
    broker: Any,
    tls: dict[str, Any],
    db: str,
    host: str,
    port: int,
    token_file: Path | None,
    token_env: str,
    regression_threshold: float,
    shared_group: str | None,
    client_id: str | None,
    adopt_after_s: float,
) -> None:
    """Run the monitor: ingest MQTT into the store and serve the dashboard and /metrics until Ctrl-C.

    Every message is validated; refused ones are parked in the store's dead_letters table. /healthz
    (open) answers 503 when ingest stopped; the process then exits with status 1. Listening beyond
    localhost needs an access token (--token-file or $EDGEKWS_FLEET_TOKEN).

    Several monitors share the ingest with --shared GROUP on one PostgreSQL store: the broker splits the
    messages among them, each answers for the whole fleet, an alert fires once, and the session of a
    monitor that dies is adopted by another (docs/mqtt.md, "Several monitors"). SQLite holds one monitor.

    Example:

        edgekws fleet serve --broker mqtt://127.0.0.1:1883 --db sqlite:///fleet.db --port 9108

        EDGEKWS_FLEET_TOKEN=$(cat token) edgekws fleet serve --host 0.0.0.0 --db postgresql+psycopg://fleet@db/fleet

        edgekws fleet serve --shared ingest --client-id mon-a --port 9108 --db postgresql+psycopg://fleet@db/fleet
    """
    from edgekws.toolkit.fleet._alerts import AlertRules
    from edgekws.toolkit.fleet._monitor import FleetMonitor, MqttIngest
    from edgekws.toolkit.fleet._server import FleetServer, check_bind

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    token = _read_token(token_file, token_env)
    try:
        check_bind(host, token)
        rules = AlertRules(threshold=regression_threshold)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    from edgekws.agent.mqtt import ID_PATTERN

    if shared_group is not None and not re.fullmatch(ID_PATTERN, shared_group):
        raise click.BadParameter(f"{shared_group!r} must match {ID_PATTERN}", param_hint="--shared")
    if client_id is None:
        host_id = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64]
        shared_id = f"edgekws-fleet-{shared_group}-{host_id}-{port}"
        client_id = "edgekws-fleet-monitor" if shared_group is None else shared_id
    store = _open_store(db)
    try:
        store.claim_ingest(shared=shared_group is not None)
    except ValueError as exc:
        store.dispose()
        raise click.ClickException(str(exc)) from exc
    monitor = FleetMonitor(store, rules, shared=shared_group is not None)
    ingest = MqttIngest(
        monitor, broker, client_id=client_id, shared_group=shared_group, silent_s=adopt_after_s, **tls
    )
    try:
        server = FleetServer(monitor, host, port, token=token, health=ingest.health)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port} ({exc}); pick another --port") from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ingest.start()
    server.start()
    click.echo(
        f"fleet monitor {client_id}: broker {broker.host}:{broker.port}, store {db}, "
        f"http://{host}:{server.port}/"
        + (f", shared group {shared_group}" if shared_group else "")
        + (" (token required)" if token else ""),
        err=True,
    )
    try:
        while not stop.wait(0.5):
            if not ingest.alive:  # never a live process with a dead ingest thread: let systemd restart us
                raise click.ClickException(f"the ingest thread stopped ({ingest.failure}); exiting")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        ingest.stop()
        store.dispose()


@fleet.command()
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=Path("broker"),
              show_default=True, help="Folder for mosquitto.conf and mosquitto.log.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=1883, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")  # fmt: skip
def broker(folder: Path, port: int) -> None:
    """Run a local mosquitto on 127.0.0.1 for trying edgekws on one machine, until Ctrl-C.

    Anonymous clients, no persistence, logs in DIR/mosquitto.log. Production brokers use
    deploy/mosquitto/mosquitto.conf (TLS, passwords, ACL: deploy/README.md).

    Example:

        edgekws fleet broker --dir tutorial/broker --port 1883
    """
    from edgekws.toolkit.fleet._broker import BrokerError, LocalBroker

    local = LocalBroker(folder, port=port or None)
    try:
        local.start()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"mosquitto on {local.url} (config {local.conf}, log {folder / 'mosquitto.log'})", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if local.proc is None or local.proc.poll() is not None:
                raise click.ClickException(f"mosquitto exited:\n{local.log()[-2000:]}")
    except KeyboardInterrupt:
        pass
    finally:
        local.stop()


@fleet.command()
@_broker_options
@click.option("--refresh", default=1.0, show_default=True, type=float, help="Seconds between redraws.")
@click.option(
    "--once", is_flag=True, help="Collect for --refresh seconds, print the table (or --json), exit."
)
@click.option("--json", "as_json", is_flag=True, help="With --once: print the device states as JSON.")
def watch(broker: Any, tls: dict[str, Any], refresh: float, once: bool, as_json: bool) -> None:
    """A live terminal table of the fleet's devices (in memory; nothing is stored).

    Example:

        edgekws fleet watch --broker mqtt://127.0.0.1:1883
    """
    from rich.console import Console
    from rich.live import Live

    from edgekws.toolkit.fleet._monitor import FleetMonitor, MqttIngest
    from edgekws.toolkit.fleet._server import device_table

    monitor = FleetMonitor()
    ingest = MqttIngest(
        monitor, broker, client_id=f"edgekws-fleet-watch-{os.getpid()}", session_expiry_s=0, **tls
    )
    ingest.start()
    try:
        if once:
            if not ingest.connected.wait(10):
                raise click.ClickException(f"cannot connect to the broker {broker.host}:{broker.port}")
            time.sleep(refresh)
            snap = monitor.snapshot()
            if as_json:
                click.echo(json.dumps(snap, indent=2))
            else:
                Console().print(device_table(snap))
            return
        with Live(device_table(monitor.snapshot()), refresh_per_second=4) as live:
            while True:
                time.sleep(refresh)
                live.update(device_table(monitor.snapshot()))
    except KeyboardInterrupt:
        pass
    finally:
        ingest.stop()


@fleet.group()
def group() -> None:
    """The fleet registry: which device belongs to which rollout group (in the monitor's store).

    `fleet deploy --group G` deploys to the devices assigned here, never to devices that merely claim
    G in their status.

    Example:

        edgekws fleet group assign lab lab/laptop-01 lab/laptop-02 --db sqlite:///fleet.db
    """


def _members(devices: tuple[str, ...]) -> list[tuple[str, str]]:
    from edgekws.agent.mqtt import ID_MAX, ID_PATTERN

    out, bad = [], []
    for name in devices:
        fleet_id, _, device = name.partition("/")
        if all(re.match(ID_PATTERN, v) and len(v) <= ID_MAX for v in (fleet_id, device)):
            out.append((fleet_id, device))
        else:
            bad.append(name)
    if bad:
        raise click.BadParameter(
            f"{', '.join(map(repr, bad))}: write each device as FLEET/DEVICE, both matching {ID_PATTERN}"
        )
    return sorted(set(out))


@group.command("assign")
@click.argument("group_name", metavar="GROUP")
@click.argument("devices", nargs=-1, required=True, metavar="FLEET/DEVICE...")
@_db_option
def group_assign(group_name: str, devices: tuple[str, ...], db: str) -> None:
    """Put devices into GROUP (each device is in one group at most; this moves it).

    Example:

        edgekws fleet group assign canary lab/laptop-01 --db sqlite:///fleet.db
    """
    from edgekws.agent.mqtt import ID_MAX, ID_PATTERN

    if not re.match(ID_PATTERN, group_name) or len(group_name) > ID_MAX:
        raise click.BadParameter(f"{group_name!r}: a group id matches {ID_PATTERN}", param_hint="GROUP")
    members = _members(devices)
    store = _open_store(db)
    try:
        store.assign_group(group_name, members)
    finally:
        store.dispose()
    click.echo(f"{len(members)} device(s) in group {group_name}")


@group.command("remove")
@click.argument("devices", nargs=-1, required=True, metavar="FLEET/DEVICE...")
@_db_option
def group_remove(devices: tuple[str, ...], db: str) -> None:
    """Take devices out of their group.

    Example:

        edgekws fleet group remove lab/laptop-01 --db sqlite:///fleet.db
    """
    store = _open_store(db, must_exist=True)
    try:
        n = store.unassign_group(_members(devices))
    finally:
        store.dispose()
    click.echo(f"{n} device(s) taken out of their group")


@group.command("list")
@click.option("--group", "group_name", default=None, help="Only this group.")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print {group: [FLEET/DEVICE, ...]} as JSON.")
def group_list(group_name: str | None, db: str, as_json: bool) -> None:
    """List the groups and their devices.

    Example:

        edgekws fleet group list --db sqlite:///fleet.db --json
    """
    store = _open_store(db, must_exist=True)
    try:
        assigned = store.group_assignments(group_name)
    finally:
        store.dispose()
    groups: dict[str, list[str]] = {}
    for (fleet_id, device), name in assigned.items():
        groups.setdefault(name, []).append(f"{fleet_id}/{device}")
    if as_json:
        click.echo(json.dumps(groups, indent=2, sort_keys=True))
        return
    for name in sorted(groups):
        click.echo(f"{name}: {' '.join(groups[name])}")


@fleet.command()
@click.argument("bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_broker_options
@click.option("--devices", default=None, help="Comma-separated device ids (or FLEET/DEVICE) to deploy to.")
@click.option("--group", default=None,
              help="Deploy to the devices assigned to this group in the fleet registry (--db).")  # fmt: skip
@click.option("--db", default="sqlite:///fleet.db", show_default=True,
              help="The monitor's store, which holds the fleet registry (only with --group).")  # fmt: skip
@click.option("--fleet", "fleet_name", default=None, help="Only devices of this fleet.")
@click.option(
    "--canary",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 100),
    help="Percent of the devices that get the bundle first; the rest only if they succeed.",
)
@click.option(
    "--rollback",
    is_flag=True,
    help="Allow deploying a version lower than a device's active one (needs --key: a signed deploy order).",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Private key that signs the deploy order; the devices must trust its public key ([rollout] "
    "order_keys, by default [store] trusted_keys). Required with --rollback.",
)
@click.option(
    "--max-failure-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Halt when more than this fraction of a wave fails (0: any failure halts).",
)
@click.option(
    "--timeout", "timeout_s", default=120.0, show_default=True, type=float, help="Seconds to wait per wave."
)
@click.option(
    "--url",
    default=None,
    help="Where devices fetch the bundle (file://, http://, https://); default: inline over MQTT when "
    "small (--inline-max), else the file's file:// URL.",
)
@click.option(
    "--inline-max",
    default=1 * 2**20,
    show_default=True,
    type=int,
    help="Largest bundle (bytes) sent inline, base64 in the command (at most 4 MiB, and the command must "
    "fit the broker's maximum packet size).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rollout report as JSON.")
def deploy(
    bundle_file: Path,
    broker: Any,
    tls: dict[str, Any],
    devices: str | None,
    group: str | None,
    db: str,
    fleet_name: str | None,
    canary: float,
    rollback: bool,
    key_path: Path | None,
    max_failure_rate: float,
    timeout_s: float,
    url: str | None,
    inline_max: int,
    as_json: bool,
) -> None:
    """Roll a bundle out over MQTT: canary devices first, then the rest; halt when too many fail.

    Each device fetches the bundle, checks its sha256, signature and hashes, activates it, runs a
    health check and reports `deploy.deployed` or `deploy.failed` (after rolling itself back).
    Downgrades are refused unless --rollback, and need --key to sign the deploy order the devices check.
    Exit status 1 when the rollout halted or a device failed. --group takes its devices from the fleet
    registry (`edgekws fleet group assign`).

    Example:

        edgekws fleet deploy kws-1.2.0.ekb --group lab --canary 10 --broker mqtt://broker:1883 --db sqlite:///fleet.db

        edgekws fleet deploy kws-1.1.0.ekb --devices box-1,box-2 --rollback --key ops.key --json
    """
    from edgekws.packaging import KeyFileError, load_private_key
    from edgekws.toolkit.fleet._rollout import RolloutError, run_rollout

    if (devices is None) == (group is None):
        raise click.UsageError("give --devices A,B or --group G")
    members = None
    if group is not None:
        store = _open_store(db, must_exist=True)
        try:
            members = sorted(store.group_assignments(group, fleet_name))
        finally:
            store.dispose()
    try:
        order_key = load_private_key(key_path) if key_path is not None else None
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        report = run_rollout(
            broker,
            bundle_file,
            devices=[d.strip() for d in devices.split(",") if d.strip()] if devices else None,
            group=group,
            members=members,
            fleet=fleet_name,
            canary_percent=canary,
            rollback=rollback,
            max_failure_rate=max_failure_rate,
            timeout_s=timeout_s,
            url=url,
            inline_max_bytes=inline_max,
            tls=tls,
            order_key=order_key,
        )
    except RolloutError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        b = report.bundle
        click.echo(f"rollout {report.rollout}: {b['name']} {b['version']} ({report.transport})")
        for d in report.devices:
            why = f"  ({d.reason})" if d.reason else ""
            click.echo(f"  {d.wave:6s} {d.fleet}/{d.device}: {d.version_before} -> {d.result}{why}")
        if report.halted:
            click.echo(f"halted: {report.reason}")
    if not report.ok:
        raise SystemExit(1)
