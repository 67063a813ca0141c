"""Test helpers shared by the agent and fleet tests: the small test front-end and network, signed bundles of
it, an agent folder with MQTT on, and an Agent running in a thread.

The test folders are not packages: pytest puts tests/agent on ``sys.path`` (``pythonpath`` in
pyproject.toml), so test files ``from _devices import ...``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import paho.mqtt.client as mqtt
import soundfile as sf
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgekws.agent._daemon import Agent
from edgekws.agent._device_store import DeviceStore
from edgekws.agent._frontend import FrontendSpec
from edgekws.agent.mqtt import DeployOrder
from edgekws.packaging import READOUT_V_TH_MANT, DetectionSpec, NetworkSpec, format_created
from edgekws.packaging._bundle import build_bundle
from edgekws.packaging._fixedpoint import FixedPointLayer, FixedPointNetwork
from edgekws.packaging._netx import write_netx
from edgekws.packaging._signing import SigningKey

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = {p.name.split(".")[0]: json.loads(p.read_text()) for p in (REPO / "docs/schemas").glob("*.json")}
SPEC = FrontendSpec(num_bands=8, thresholds_db=(-30.0, -15.0))
LABELS = ("_silence_", "yes", "no")
KEY = SigningKey.generate()


def realistic_network() -> FixedPointNetwork:
    """A quantized C → recurrent H → O network with the spec's decays, a bias and the readout threshold."""
    spec = NetworkSpec(num_inputs=20, hidden=(32,), recurrent=(True,), num_outputs=4)
    rng = np.random.default_rng(11)
    hidden = FixedPointLayer(
        weight=rng.integers(-40, 90, (32, 20)),
        weight_rec=rng.integers(-60, 40, (32, 32)),
        i_decay=spec.i_decay,
        v_decay=spec.v_decay,
        v_th_mant=256,
        weight_scale=2.0**-8,
        bias=rng.integers(-8, 8, 32),
    )
    readout = FixedPointLayer(
        weight=rng.integers(-128, 128, (4, 32)),
        i_decay=spec.i_decay,
        v_decay=spec.v_decay,
        v_th_mant=READOUT_V_TH_MANT,
        weight_scale=2.0**-9,
    )
    return FixedPointNetwork((hidden, readout))


def small_network(channels: int | None = None, *, hidden: int = 24, seed: int = 7) -> FixedPointNetwork:
    """A random ``channels`` → ``hidden`` recurrent → 3 network that fires on noise (``SPEC``'s channels
    by default)."""
    rng = np.random.default_rng(seed)
    c = channels or SPEC.num_channels
    return FixedPointNetwork(
        (
            FixedPointLayer(
                rng.integers(-60, 120, size=(hidden, c)),
                rng.integers(-40, 40, size=(hidden, hidden)),
                i_decay=1000,
                v_decay=200,
                v_th_mant=600,
                weight_scale=1 / 64,
            ),
            FixedPointLayer(
                rng.integers(-80, 80, size=(len(LABELS), hidden)),
                i_decay=1000,
                v_decay=200,
                weight_scale=1 / 8,
            ),
        )
    )


def make_bundle(
    folder: Path,
    version: str,
    *,
    inputs: int | None = None,
    key: SigningKey = KEY,
    detection: DetectionSpec | None = None,
) -> Path:
    """A signed bundle of ``small_network()``; ``inputs`` other than the front-end's breaks it. With an
    always-on ``detection`` it is a stream model's bundle: a background class, num_steps the length of its
    (20 s) training stretches."""
    c, h = inputs or SPEC.num_channels, 24
    netx = write_netx(small_network(c, hidden=h), folder / f"netx-{version}-{c}.h5")
    labels = LABELS if detection is None else (detection.background_label, *LABELS[1:])
    steps = 200 if detection is None else 20000
    spec = NetworkSpec(num_inputs=c, hidden=(h,), num_outputs=3, num_steps=steps, class_names=labels)
    return build_bundle(
        folder / f"kws-{version}{'-broken' if inputs else ''}.ekb",
        name="kws",
        version=version,
        labels=labels,
        frontend=SPEC.to_dict(),
        network=spec.to_dict(),
        files={"model/netx.h5": netx},
        private_key=key,
        detection=None if detection is None else detection.to_dict(),
    )


def write_agent_config(
    folder: Path,
    port: int,
    device: str,
    group: str | None = None,
    delivery: str = "broker",
    realtime: bool = True,
    allowed_urls: tuple[str, ...] = (),
) -> Path:
    """An agent folder: store with kws-1.0.0, trusted key, a looping noise WAV, MQTT on; the config path.
    ``allowed_urls``: the ``[rollout] allowed_urls`` (default none: inline bundles only)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "release.pub").write_bytes(KEY.public_key.to_pem())
    DeviceStore(folder / "store", [KEY.public_key]).install(make_bundle(folder, "1.0.0"))
    (folder / "audio").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    sf.write(folder / "audio" / "a.wav", (0.2 * rng.standard_normal(8000)).astype(np.float32), 16000)
    cfg = folder / "agent.toml"
    cfg.write_text(
        f"""
[device]
id = "{device}"
fleet = "f1"
{f'group = "{group}"' if group else ""}

[store]
dir = "store"
trusted_keys = ["release.pub"]

[source]
type = "wav"
path = "audio"
loop = true
realtime = {str(realtime).lower()}

[detection]
lanes = 2
threshold = 0.0001
refractory_ms = 0
min_input_rate_hz = 0
ignore_labels = []

[telemetry]
interval_s = 0.3

[telemetry.mqtt]
enabled = true
broker = "mqtt://127.0.0.1:{port}"
delivery = "{delivery}"
outbox = "outbox.sqlite"

[rollout]
allowed_urls = {json.dumps(list(allowed_urls))}

[logging]
level = "warning"
"""
    )
    return cfg


def signed_order(
    action: str,
    version: str,
    targets: list[str],
    *,
    sha256: str | None = None,
    key: SigningKey = KEY,
    order_id: str | None = None,
    valid_s: float = 600.0,
) -> dict[str, Any]:
    """A deploy order for ``kws`` ``version`` on ``targets`` (``fleet/device``), signed by ``key``."""
    order = DeployOrder(
        type="edgekws.deploy-order/1",
        id=order_id or f"o-{uuid.uuid4().hex[:10]}",
        action=action,  # type: ignore[arg-type]
        name="kws",
        version=version,
        sha256=sha256,
        targets=targets,
        not_after=format_created(datetime.now(timezone.utc) + timedelta(seconds=valid_s)),
    )
    return order.sign([key]).model_dump(by_alias=True)


class RunningAgent:
    """An Agent running in a thread (the same code as `edgekws-agent run`), stopped like SIGTERM does."""

    def __init__(self, config: Path) -> None:
        self.agent = Agent(config, env={})
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            link = self.agent.link
            if link is not None and link.connected.is_set():
                return
            time.sleep(0.02)
        raise AssertionError("the agent did not connect to the broker")

    def stop(self) -> None:
        self.agent.request_stop()
        self.thread.join(20)
        assert not self.thread.is_alive()


def inline(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {
        "name": "kws",
        "version": path.stem.split("-")[1],
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "data": base64.b64encode(data).decode(),
    }


def stream_detections(links: list[Any], n: int, pause_s: float) -> tuple[dict[str, list[str]], list[Any]]:
    """Each device link (DeviceTelemetry) sends ``n`` detections, ``pause_s`` apart, in its own started
    thread: returns the ids sent per device (filled as they go) and the threads."""
    sent: dict[str, list[str]] = {link.device: [] for link in links}

    def produce(link: Any) -> None:
        for i in range(n):
            msg_id = link.detection("yes", 0.9, float(i))
            assert msg_id is not None
            sent[link.device].append(msg_id)
            time.sleep(pause_s)

    threads = [threading.Thread(target=produce, args=(link,)) for link in links]
    for t in threads:
        t.start()
    return sent, threads


def wait_until(pred: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """``pred()``'s first true value, polled every 20 ms; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or pred}")


class Operator:
    """A plain MQTT client that sends commands and records device events and retained statuses."""

    def __init__(self, port: int) -> None:
        self.events: list[dict[str, Any]] = []
        self.status: dict[str, dict[str, Any]] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("edgekws/v1/+/+/event", qos=1)
        self.client.subscribe("edgekws/v1/+/+/status", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        if msg.topic.endswith("/status"):
            self.status[msg.topic.split("/")[3]] = body
        else:
            self.events.append(body)

    def send(self, device: str, kind: str, **fields: Any) -> str:
        cmd_id = f"c-{uuid.uuid4().hex[:8]}"
        body = {"schema": "edgekws.cmd/1", "id": cmd_id, "ts": time.time(), "type": kind, **fields}
        jsonschema.validate(body, SCHEMAS["command"])
        self.client.publish(f"edgekws/v1/f1/{device}/cmd/{kind}", json.dumps(body), qos=1).wait_for_publish(5)
        return cmd_id

    def send_raw(self, device: str, kind: str, payload: bytes) -> None:
        """Publish any bytes on the device's ``cmd/KIND`` topic (what a careless or hostile client can)."""
        self.client.publish(f"edgekws/v1/f1/{device}/cmd/{kind}", payload, qos=1).wait_for_publish(5)

    def wait(self, pred: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; events: {self.kinds()}")
            time.sleep(0.02)

    def kinds(self) -> list[str]:
        return [e["kind"] for e in list(self.events)]

    def result(self, cmd_id: str, kinds: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in list(self.events):
                if e["kind"] in kinds and e["detail"].get("command_id") == cmd_id:
                    return e
            time.sleep(0.02)
        raise AssertionError(f"no {kinds} for {cmd_id}; events: {[e['kind'] for e in self.events]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


AGENT = Path(sys.executable).parent / "edgekws-agent"

# A full disk for a child process, without fork-time hooks (preexec_fn forks, which JAX, imported by other
# tests, warns about): a launcher ignores SIGXFSZ, caps file sizes at 16 KiB (writes beyond fail with EFBIG),
# then execs the command that follows it.
FULL_DISK = [
    sys.executable,
    "-c",
    "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384)); os.execv(sys.argv[1], sys.argv[1:])",
]


class AgentProcess:
    """`edgekws-agent run --config CFG` as a real process (stderr in ``log``), for signals and kill -9."""

    def __init__(self, config: Path, *, command: list[str] | None = None) -> None:
        self.config = config
        self.log = config.parent / f"agent-{time.monotonic_ns()}.log"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                command or [str(AGENT), "run", "--config", str(config)],
                stderr=err,
                stdout=subprocess.DEVNULL,
                cwd=config.parent,
            )

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{needle!r} not logged (exit {self.proc.poll()}):\n{self.text()[-3000:]}"
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)
