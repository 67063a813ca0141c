"""Over-the-air rollouts: send ``cmd/deploy`` to canary devices, wait for their reports, then the rest.

The protocol (docs/mqtt.md, "Rollouts"):

1. **discover**: subscribe to ``edgekws/v1/+/+/status`` and ``.../event``; the broker hands over every
   device's retained status (online/offline, bundle, backend). Targets are the named devices or the
   members of a group in the fleet registry (``members``: the monitor's ``device_groups``, set by the
   operator; the group a device's own status claims is never trusted).
2. **plan**: refuse the whole rollout if any target runs a higher version of the model unless
   ``rollback`` (the device refuses it too), or if a deploy command would exceed the maximum packet size
   the broker announced in its CONNACK (an inline bundle too large for it); split the targets (sorted) into
   a canary wave (``ceil(n * canary / 100)``, at least one when ``canary > 0``) and the rest.
3. **per wave**: publish one ``deploy`` command per device (QoS 1, id ``<rollout>-<device>``; a broker that
   refuses it or closes the connection instead of its PUBACK fails that device with the reason) and wait up
   to ``timeout_s`` for each device's ``deploy.deployed`` or ``deploy.failed`` event (``command.rejected``
   and silence count as failures). When the failure rate of the wave exceeds ``max_failure_rate`` the
   rollout **halts**: later waves get nothing.

Devices roll back by themselves when the new bundle fails its health check, so a halted rollout leaves
the canaries on their old version; ``deploy --rollback`` with the old bundle undoes a completed one. A
downgrade must be authorized: ``order_key`` signs a deploy order (name, version, sha256, the target
devices, an expiry) that the devices check against their ``[rollout] order_keys``.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edgekws.agent.mqtt import (
    COMMAND_ID_MAX,
    COMMAND_SCHEMA,
    INLINE_MAX_BYTES,
    BrokerUrl,
    ClientOptions,
    ConnectFailed,
    DeployCommand,
    DeployOrder,
    MqttSession,
    SignedOrder,
    SubscribeRefused,
    TlsFiles,
    command_topic,
    device_subscription,
    parse_topic,
    publish_packet_size,
)
from edgekws.packaging import SemVer, SigningKey, check_bundle, format_created, sha256_hex


class RolloutError(ValueError):
    """A rollout that cannot start (bad bundle, unknown devices, a refused downgrade); nothing was sent."""


@dataclass
class DeviceResult:
    """What one device reported for its deploy command."""

    fleet: str
    device: str
    wave: str  # canary | rest
    result: str = "pending"  # deployed | failed | timeout | skipped
    version_before: str | None = None
    reason: str | None = None
    rolled_back: bool = False
    seconds: float | None = None


@dataclass
class RolloutReport:
    """The outcome of a rollout: per-device results and whether it halted (and why)."""

    rollout: str
    bundle: dict[str, Any]
    transport: str
    devices: list[DeviceResult] = field(default_factory=list)
    halted: bool = False
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return not self.halted and all(d.result == "deployed" for d in self.devices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout,
            "bundle": self.bundle,
            "transport": self.transport,
            "ok": self.ok,
            "halted": self.halted,
            "reason": self.reason,
            "devices": [asdict(d) for d in self.devices],
        }


def bundle_reference(
    bundle_path: Path, url: str | None = None, inline_max_bytes: int = 1 * 2**20
) -> dict[str, Any]:
    """The ``bundle`` object of a deploy command: name, version, sha256, size and ``url`` or ``data``.

    Without ``url``, a bundle up to ``inline_max_bytes`` travels inline (base64); a larger one is referred
    to by its ``file://`` URL, which only works where devices share the file system.
    """
    data = bundle_path.read_bytes()
    report = check_bundle(data)  # the manifest without trust: the devices verify the signature
    if report.manifest is None or report.problems:
        problems = "; ".join(str(p) for p in report.problems)
        raise RolloutError(f"{bundle_path} would be refused by every device: {problems}")
    ref: dict[str, Any] = {
        "name": report.manifest.name,
        "version": report.manifest.version,
        "sha256": sha256_hex(data),
        "size": len(data),
    }
    if url is not None:
        if not url.startswith(("file://", "http://", "https://")):
            raise RolloutError(f"--url must be a file://, http:// or https:// URL, got {url!r}")
        ref["url"] = url
    elif len(data) <= min(inline_max_bytes, INLINE_MAX_BYTES):
        ref["data"] = base64.b64encode(data).decode()
    else:
        ref["url"] = bundle_path.resolve().as_uri()
    return ref


class _Session:
    """The rollout tool's MQTT connection: retained statuses and device events, as they arrive."""

    def __init__(self, broker: BrokerUrl, tls: dict[str, Any] | None) -> None:
        self.status: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.pubacks: dict[int, Any] = {}
        self.changed = threading.Condition()
        files = tls or {}
        self.mqtt = MqttSession(
            ClientOptions(
                broker=broker,
                client_id=f"edgekws-rollout-{uuid.uuid4().hex[:8]}",
                tls=TlsFiles(files.get("ca_file"), files.get("cert_file"), files.get("key_file")),
            )
        )
        self.mqtt.client.on_message = self._on_message
        self.mqtt.client.on_publish = self._on_publish
        self.mqtt.start_loop()
        try:
            self.mqtt.connect()
            self.mqtt.subscribe(device_subscription(("status", "event")))
        except (ConnectFailed, SubscribeRefused) as exc:
            self.mqtt.close()
            raise RolloutError(f"{exc}; nothing was sent") from exc

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        where = parse_topic(msg.topic)
        try:
            body = json.loads(msg.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        if where is None or where.kind not in ("status", "event") or not isinstance(body, dict):
            return
        with self.changed:
            if where.kind == "status":
                self.status[(where.fleet, where.device)] = body
            else:
                self.events.append((where.fleet, where.device, body))
            self.changed.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        with self.changed:
            self.pubacks[mid] = reason_code
            self.changed.notify_all()

    def publish(self, fleet: str, device: str, command: DeployCommand, timeout_s: float = 10.0) -> str | None:
        """Send one deploy command; None once the broker acknowledged it, else why it did not take it."""
        topic, payload = _command_packet(fleet, device, command)
        size = publish_packet_size(topic, payload)
        info = self.mqtt.publish(topic, payload)
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while info.mid not in self.pubacks:
                if self.mqtt.dropped:
                    return (
                        f"the broker closed the connection instead of acknowledging the {size}-byte deploy "
                        f"command ({self.mqtt.disconnect_reason}); a broker whose message_size_limit is "
                        "below that does so: serve the bundle over http(s) and pass --url, or raise the "
                        "broker's limit (and set its max_packet_size, which clients are told at connect)"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"the broker did not acknowledge the deploy command within {timeout_s:g} s"
                self.changed.wait(min(left, 0.05))
            code = self.pubacks.pop(info.mid)
        if code.is_failure:
            return f"the broker refused the {size}-byte deploy command: {code}"
        return None

    def close(self) -> None:
        self.mqtt.close()


def _command_packet(fleet: str, device: str, command: DeployCommand) -> tuple[str, bytes]:
    return command_topic(fleet, device, "deploy"), json.dumps(command.payload()).encode()


def _targets(
    status: dict[tuple[str, str], dict[str, Any]],
    devices: list[str] | None,
    group: str | None,
    fleet: str | None,
    members: list[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    known = sorted(k for k in status if fleet is None or k[0] == fleet)
    if group is not None:
        found = sorted({k for k in members or [] if fleet is None or k[0] == fleet})
        if not found:
            claims = [f"{f}/{d}" for f, d in known if status[(f, d)].get("group") == group]
            hint = (
                f" (devices whose own status claims it, not trusted: {', '.join(claims[:10])})"
                if claims
                else ""
            )
            raise RolloutError(
                f"no device is assigned to group {group!r} in the fleet registry{hint}; assign them with "
                f"`edgekws fleet group assign {group} FLEET/DEVICE ...`; nothing was sent"
            )
        return found
    problems, out = [], []
    for name in devices or []:
        want_fleet, _, dev = name.rpartition("/")
        want_fleet = want_fleet or fleet or ""
        hits = [k for k in known if k[1] == dev and (not want_fleet or k[0] == want_fleet)]
        if len(hits) == 1:
            out.append(hits[0])
        elif len(hits) > 1:
            problems.append(
                f"{name} is in several fleets ({', '.join(f for f, _ in hits)}); write FLEET/{dev}"
            )
        elif want_fleet:
            out.append((want_fleet, dev))  # never seen: send anyway (its version is unknown)
        else:
            problems.append(f"{name} has no status on the broker; give --fleet or write FLEET/{name}")
    if problems:
        raise RolloutError("cannot resolve the devices:\n  " + "\n  ".join(problems))
    return sorted(set(out))


def _downgrades(
    targets: list[tuple[str, str]], status: dict[tuple[str, str], dict[str, Any]], ref: dict[str, Any]
) -> list[str]:
    new = SemVer.parse(ref["version"])
    found = []
    for key in targets:
        bundle = (status.get(key) or {}).get("bundle") or {}
        version = bundle.get("version")
        if bundle.get("name") == ref["name"] and isinstance(version, str) and SemVer.parse(version) > new:
            found.append(f"{key[0]}/{key[1]} runs {version}")
    return found


def _check_packet_size(
    targets: list[tuple[str, str]],
    ref: dict[str, Any],
    rollout_id: str,
    rollback: bool,
    limit: int | None,
    where: str,
    order: SignedOrder | None = None,
) -> None:
    """Refuse (nothing sent) when a deploy command would exceed the broker's announced maximum packet size."""
    if limit is None or "data" not in ref:
        return
    longest_ts = 9999999999.999  # the commands are made per wave; their ts is never longer than this
    sizes = [
        publish_packet_size(
            *_command_packet(f, d, _deploy_command(ref, rollout_id, d, rollback, longest_ts, order))
        )
        for f, d in targets
    ]
    if max(sizes, default=0) > limit:
        overhead = max(sizes) - len(ref["data"])
        fits = max(0, (limit - overhead) * 3 // 4)
        raise RolloutError(
            f"the deploy command with the bundle inline is {max(sizes)} bytes, more than the {limit}-byte "
            f"maximum packet size the broker {where} announced (its max_packet_size); bundles up to about "
            f"{fits} bytes fit inline there. Serve the bundle over http(s) and pass --url, or raise the "
            "broker's limit; nothing was sent"
        )


def _deploy_command(
    ref: dict[str, Any],
    rollout_id: str,
    device: str,
    rollback: bool,
    ts: float | None = None,
    order: SignedOrder | None = None,
) -> DeployCommand:
    return DeployCommand(
        schema=COMMAND_SCHEMA,
        id=f"{rollout_id}-{device}"[:COMMAND_ID_MAX],
        ts=round(time.time(), 3) if ts is None else ts,
        type="deploy",
        bundle=ref,
        rollback=rollback,
        rollout=rollout_id,
        order=order,
    )


def run_rollout(
    broker: BrokerUrl,
    bundle_path: Path,
    *,
    devices: list[str] | None = None,
    group: str | None = None,
    members: list[tuple[str, str]] | None = None,
    fleet: str | None = None,
    canary_percent: float = 0.0,
    rollback: bool = False,
    max_failure_rate: float = 0.0,
    timeout_s: float = 120.0,
    url: str | None = None,
    inline_max_bytes: int = 1 * 2**20,
    discover_s: float = 1.0,
    tls: dict[str, Any] | None = None,
    order_key: SigningKey | None = None,
) -> RolloutReport:
    """Roll ``bundle_path`` out to ``devices`` (names or FLEET/NAME) or a ``group`` (its ``members``, from the
    fleet registry: :meth:`FleetStore.group_assignments`), canaries first.

    ``rollback`` (a downgrade) needs ``order_key``: it signs the deploy order the devices require.
    """
    if (devices is None) == (group is None):
        raise RolloutError("give the target devices or a group (exactly one of them)")
    if not 0 <= canary_percent <= 100 or not 0 <= max_failure_rate <= 1:
        raise RolloutError("canary must be a percentage in [0, 100] and max_failure_rate a rate in [0, 1]")
    if rollback and order_key is None:
        raise RolloutError(
            "a downgrade must be authorized by a signed deploy order: pass --key with a private key whose "
            "public key the devices trust ([rollout] order_keys, by default [store] trusted_keys)"
        )
    ref = bundle_reference(bundle_path, url, inline_max_bytes)
    session = _Session(broker, tls)
    try:
        deadline = time.monotonic() + discover_s  # retained statuses arrive right after subscribing
        wanted = {d.rpartition("/")[2] for d in devices or []}
        while time.monotonic() < deadline:
            if wanted and wanted <= {k[1] for k in session.status}:
                break
            time.sleep(0.02)
        with session.changed:
            status = dict(session.status)
        targets = _targets(status, devices, group, fleet, members)
        downgrades = _downgrades(targets, status, ref)
        if downgrades and not rollback:
            raise RolloutError(
                f"refusing to downgrade to {ref['name']} {ref['version']}: "
                + "; ".join(downgrades)
                + "; pass --rollback to roll these devices back"
            )
        rollout_id = f"r-{uuid.uuid4().hex[:10]}"
        n_canary = min(len(targets), math.ceil(len(targets) * canary_percent / 100)) if canary_percent else 0
        waves = [("canary", targets[:n_canary]), ("rest", targets[n_canary:])]
        order = None
        if order_key is not None:
            valid_s = timeout_s * len(waves) + 600  # the waves, and room for clock skew
            order = sign_order(order_key, rollout_id, ref, targets, valid_s)
        limit = session.mqtt.max_packet_size
        _check_packet_size(targets, ref, rollout_id, rollback, limit, session.mqtt.where, order)
        report = RolloutReport(rollout_id, {k: v for k, v in ref.items() if k != "data"}, _transport(ref))
        for wave, keys in waves:
            results = [
                DeviceResult(
                    fleet=f,
                    device=d,
                    wave=wave,
                    version_before=((status.get((f, d)) or {}).get("bundle") or {}).get("version"),
                )
                for f, d in keys
            ]
            report.devices += results
            if report.halted:
                for r in results:
                    r.result, r.reason = "skipped", "the rollout halted"
                continue
            if not results:
                continue
            _run_wave(session, results, ref, rollout_id, rollback, timeout_s, order)
            failed = sum(r.result != "deployed" for r in results)
            rate = failed / len(results)
            if rate > max_failure_rate:
                report.halted = True
                report.reason = (
                    f"{failed} of {len(results)} {wave} device(s) failed (rate {rate:.2f} > "
                    f"max {max_failure_rate:.2f}); the rollout halted"
                )
        return report
    finally:
        session.close()


def sign_order(
    key: SigningKey, order_id: str, ref: dict[str, Any], targets: list[tuple[str, str]], valid_s: float
) -> SignedOrder:
    """A deploy order for the bundle ``ref`` on ``targets`` ((fleet, device)), valid ``valid_s`` seconds,
    signed by ``key`` (docs/mqtt.md, "Authorization")."""
    order = DeployOrder(
        type="edgekws.deploy-order/1",
        id=order_id,
        action="deploy",
        name=ref["name"],
        version=ref["version"],
        sha256=ref["sha256"],
        targets=[f"{f}/{d}" for f, d in targets],
        not_after=format_created(datetime.now(timezone.utc) + timedelta(seconds=valid_s)),
    )
    return order.sign([key])


def _transport(ref: dict[str, Any]) -> str:
    return "inline" if "data" in ref else str(ref["url"]).split("://")[0]


def _run_wave(
    session: _Session,
    results: list[DeviceResult],
    ref: dict[str, Any],
    rollout_id: str,
    rollback: bool,
    timeout_s: float,
    order: SignedOrder | None = None,
) -> None:
    """Send one deploy per device, then wait for every device's report (or the timeout)."""
    by_id: dict[str, DeviceResult] = {}
    with session.changed:
        seen = len(session.events)
    t0 = time.monotonic()
    for r in results:
        if session.mqtt.dropped:
            r.result, r.reason = "failed", "not sent: the broker closed the connection"
            continue
        command = _deploy_command(ref, rollout_id, r.device, rollback, order=order)
        refused = session.publish(r.fleet, r.device, command)
        if refused is not None:
            r.result, r.reason, r.seconds = "failed", refused, round(time.monotonic() - t0, 3)
            continue
        by_id[command.id] = r
    deadline = t0 + timeout_s
    with session.changed:
        while any(r.result == "pending" for r in results):
            for fleet, device, event in session.events[seen:]:
                detail = event.get("detail") or {}
                hit = by_id.get(str(detail.get("command_id")))
                if hit is None or (fleet, device) != (hit.fleet, hit.device) or hit.result != "pending":
                    continue
                r = hit
                kind = event.get("kind")
                if kind == "deploy.deployed":
                    r.result = "deployed"
                elif kind in ("deploy.failed", "command.rejected", "command.failed"):
                    r.result = "failed"
                    r.reason = str(detail.get("reason") or detail.get("error") or detail.get("problems"))
                    r.rolled_back = bool(detail.get("rolled_back"))
                else:
                    continue
                r.seconds = round(time.monotonic() - t0, 3)
            seen = len(session.events)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            session.changed.wait(min(left, 0.5))
    for r in results:
        if r.result == "pending":
            r.result, r.reason = "timeout", f"no report within {timeout_s:g} s"
