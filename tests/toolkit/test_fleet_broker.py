"""The broker set-up in deploy/mosquitto: passwords from make-device-credentials.sh, the pattern ACL (a device
cannot publish as another or read its commands), mutual TLS with certificates made here, and the production
mosquitto.conf itself run as shipped (client ids tied to logins: M6)."""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgekws.agent._config import MqttConfig, MqttTlsConfig
from edgekws.agent._telemetry import DeviceTelemetry
from edgekws.agent.mqtt import Backoff, BrokerUrl
from edgekws.toolkit.fleet import FleetMonitor, LocalBroker, MqttIngest
from edgekws.toolkit.fleet._broker import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "mosquitto" / "make-device-credentials.sh"
ACL = REPO / "deploy" / "mosquitto" / "acl"


def _client(port: int, user: str, password: str, got: list[tuple[str, bytes]] | None = None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    c.username_pw_set(user, password)
    if got is not None:
        c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_acl_binds_each_device_to_its_own_topics(tmp_path: Path, broker_factory: Any) -> None:
    """Device A's publish on B's topic is refused (the monitor never sees it); A cannot read B's commands."""
    pki = tmp_path / "pki"
    for args in (["f1", "dA"], ["f1", "dB"], ["--user", "edgekws-monitor"]):
        subprocess.run(["bash", str(SCRIPT), "-d", str(pki), *args], check=True, capture_output=True)
    pw = {
        u: (pki / p).read_text().strip()
        for u, p in [
            ("f1/dA", "devices/f1/dA/password"),
            ("f1/dB", "devices/f1/dB/password"),
            ("edgekws-monitor", "users/edgekws-monitor.password"),
        ]
    }
    b = broker_factory(f"allow_anonymous false\npassword_file {pki / 'passwd'}\nacl_file {ACL}")
    seen: list[tuple[str, bytes]] = []
    monitor = _client(b.port, "edgekws-monitor", pw["edgekws-monitor"], seen)
    monitor.subscribe("edgekws/v1/#", qos=1)
    a_got: list[tuple[str, bytes]] = []
    b_got: list[tuple[str, bytes]] = []
    dev_a = _client(b.port, "f1/dA", pw["f1/dA"], a_got)
    dev_b = _client(b.port, "f1/dB", pw["f1/dB"], b_got)
    try:
        time.sleep(0.3)
        sub = dev_a.subscribe("edgekws/v1/f1/dB/cmd/#", qos=1)
        dev_a.subscribe("edgekws/v1/f1/dA/cmd/#", qos=1)
        dev_b.subscribe("edgekws/v1/f1/dB/cmd/#", qos=1)
        forged = dev_a.publish("edgekws/v1/f1/dB/telemetry", b'{"forged": true}', qos=1)
        own = dev_a.publish("edgekws/v1/f1/dA/telemetry", b'{"own": true}', qos=1)
        forged.wait_for_publish(3)
        own.wait_for_publish(3)
        monitor.publish("edgekws/v1/f1/dB/cmd/ping", b'{"for": "B"}', qos=1).wait_for_publish(3)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not (
            b_got and any(t.endswith("dA/telemetry") for t, _ in seen)
        ):
            time.sleep(0.02)
        time.sleep(0.2)
        assert sub[0] == mqtt.MQTT_ERR_SUCCESS
        assert [t for t, _ in seen if "telemetry" in t] == [
            "edgekws/v1/f1/dA/telemetry"
        ]  # the forgery never arrives
        assert b_got == [("edgekws/v1/f1/dB/cmd/ping", b'{"for": "B"}')]
        assert a_got == []  # A's subscription to B's commands was refused
        denied = _client(b.port, "f1/dA", "wrong-password")
        time.sleep(0.3)
        assert not denied.is_connected()
        denied.loop_stop()
    finally:
        for c in (monitor, dev_a, dev_b):
            c.disconnect()
            c.loop_stop()


def _cert(
    subject: str,
    key: Any,
    issuer: x509.Name | None,
    issuer_key: Any,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path.with_suffix(".crt"), path.with_suffix(".key")


def test_device_and_monitor_talk_over_mutual_tls(tmp_path: Path, broker_factory: Any) -> None:
    """With CA-signed server and client certificates telemetry flows over TLS; no certificate: refused."""
    ca_key, srv_key, cli_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("edgekws test CA", ca_key, None, ca_key, ca=True)
    ca_file, _ = _write(tmp_path / "ca", ca, ca_key)
    srv_crt, srv_key_file = _write(
        tmp_path / "server", _cert("127.0.0.1", srv_key, ca.subject, ca_key, server=True), srv_key
    )
    cli_crt, cli_key_file = _write(tmp_path / "client", _cert("f1/d1", cli_key, ca.subject, ca_key), cli_key)
    b = broker_factory(
        f"allow_anonymous true\ncafile {ca_file}\ncertfile {srv_crt}\nkeyfile {srv_key_file}\n"
        "require_certificate true\ntls_version tlsv1.2"
    )
    monitor = FleetMonitor()
    ingest = MqttIngest(
        monitor,
        BrokerUrl.parse(f"mqtts://127.0.0.1:{b.port}"),
        ca_file=str(ca_file),
        cert_file=str(cli_crt),
        key_file=str(cli_key_file),
    )
    ingest.start()
    tls = MqttTlsConfig(ca_file=ca_file, cert_file=cli_crt, key_file=cli_key_file)
    link = DeviceTelemetry(
        MqttConfig(
            broker=f"mqtts://127.0.0.1:{b.port}", tls=tls, outbox=tmp_path / "q.sqlite", delivery="broker"
        ),
        fleet="f1",
        device="d1",
        bundle={"name": "digits", "version": "2.0.0"},
        backend="onnx",
    )
    no_cert = DeviceTelemetry(
        MqttConfig(
            broker=f"mqtts://127.0.0.1:{b.port}",
            tls=MqttTlsConfig(ca_file=ca_file),
            outbox=tmp_path / "q2.sqlite",
        ),
        fleet="f1",
        device="d2",
        backoff=Backoff(5, 30),
    )
    try:
        assert ingest.connected.wait(5)
        link.start()
        no_cert.start()
        assert link.connected.wait(5)
        link.event("bundle.activated", version="2.0.0")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not monitor.messages_total["event"]:
            time.sleep(0.02)
        d = monitor.devices[("f1", "d1")]
        assert d.online and d.bundle_version == "2.0.0" and d.messages["event"] == 1
        assert not no_cert.connected.is_set()
        assert ("f1", "d2") not in monitor.devices
    finally:
        link.stop()
        no_cert.stop()
        ingest.stop()


def test_fleet_broker_command_runs_mosquitto_until_sigterm(tmp_path: Path) -> None:
    """`edgekws fleet broker` serves MQTT on 127.0.0.1 and exits 0 on SIGTERM, leaving its config and log."""
    from edgekws.toolkit.fleet._broker import free_port

    port = free_port()
    exe = Path(sys.executable).with_name("edgekws")
    proc = subprocess.Popen(
        [str(exe), "fleet", "broker", "--dir", str(tmp_path / "b"), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + 20
        while True:
            try:
                c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
                c.connect("127.0.0.1", port)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
                time.sleep(0.1)
        c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
        c.loop_start()
        c.subscribe("t", qos=1)
        time.sleep(0.3)
        c.publish("t", b"hi", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        c.loop_stop()
        c.disconnect()
        assert got == [("t", b"hi")]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"mqtt://127.0.0.1:{port}" in err
    assert f"listener {port} 127.0.0.1" in (tmp_path / "b" / "mosquitto.conf").read_text()
    assert (tmp_path / "b" / "mosquitto.log").exists()


def test_fleet_broker_without_mosquitto_says_how_to_install_it(tmp_path: Path) -> None:
    """A missing mosquitto binary is a clear error naming the package and EDGEKWS_MOSQUITTO."""
    exe = Path(sys.executable).with_name("edgekws")
    env = {**os.environ, "EDGEKWS_MOSQUITTO": str(tmp_path / "nope")}
    out = subprocess.run(
        [str(exe), "fleet", "broker", "--dir", str(tmp_path / "b"), "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 1 and "EDGEKWS_MOSQUITTO" in out.stderr and "not an executable" in out.stderr


def _production_broker(tmp_path: Path) -> tuple[LocalBroker, Path, int]:
    """deploy/mosquitto/mosquitto.conf as shipped, its paths and ports moved into tmp_path (and a log file):
    the broker (started, TLS listener), the credentials folder and the plain listener's port."""
    pki = tmp_path / "pki"
    for args in (["--server", "127.0.0.1"], ["f1", "dA"], ["f1", "dB"], ["--user", "edgekws-monitor"]):
        subprocess.run(["bash", str(SCRIPT), "-d", str(pki), *args], check=True, capture_output=True)
    shutil.copy(ACL, pki / "acl")
    folder, tls_port, plain_port = tmp_path / "broker", free_port(), free_port()
    config = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    for old, new in (
        ("/etc/mosquitto/edgekws/", f"{pki}/"),
        ("persistence_location /var/lib/mosquitto/", f"persistence_location {folder}/"),
        ("listener 8883\n", f"listener {tls_port} 127.0.0.1\n"),
        ("listener 1883 127.0.0.1\n", f"listener {plain_port} 127.0.0.1\n"),
    ):
        assert old in config, f"deploy/mosquitto/mosquitto.conf no longer has {old!r}"
        config = config.replace(old, new)
    head = f"user {getpass.getuser()}\nlog_dest file {folder}/mosquitto.log\nlog_type all\n"
    broker = LocalBroker(folder, port=tls_port, config=head + config)
    return broker.start(), pki, plain_port


def _tls_client(port: int, pki: Path, device: str, client_id: str) -> mqtt.Client:
    """A device's TLS connection (its certificate and password) that asks for ``client_id``."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    files = pki / "devices" / "f1" / device
    c.tls_set(
        str(pki / "ca.crt"),
        str(files / "client.crt"),
        str(files / "client.key"),
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    c.username_pw_set(f"f1/{device}", (files / "password").read_text().strip())
    c.connect("127.0.0.1", port)
    return c


def test_production_broker_ties_client_ids_to_logins(tmp_path: Path) -> None:
    """Under the shipped mosquitto.conf, device A -- with its own valid certificate and password -- asks for
    device B's client id, B's login and the monitor's client id, twice each: neither B nor the monitor is
    knocked off (each keeps its one connection), and B's messages still reach the monitor (M6)."""
    broker, pki, plain_port = _production_broker(tmp_path)
    monitor_password = (pki / "users" / "edgekws-monitor.password").read_text().strip()
    monitor = FleetMonitor()
    ingest = MqttIngest(
        monitor, BrokerUrl("127.0.0.1", plain_port, username="edgekws-monitor", password=monitor_password)
    )
    files = pki / "devices" / "f1" / "dB"
    tls = MqttTlsConfig(ca_file=pki / "ca.crt", cert_file=files / "client.crt", key_file=files / "client.key")
    settings = MqttConfig(
        broker=f"mqtts://127.0.0.1:{broker.port}",
        username="f1/dB",
        password_file=files / "password",
        tls=tls,
        outbox=tmp_path / "q.sqlite",
        delivery="broker",
    )
    password = (files / "password").read_text().strip()  # what the daemon reads from password_file
    device_b = DeviceTelemetry(settings, fleet="f1", device="dB", backend="e", password=password)
    try:
        ingest.start()
        device_b.start()
        assert ingest.connected.wait(10) and device_b.connected.wait(10)
        for client_id in ("edgekws-f1-dB", "f1/dB", "edgekws-fleet-monitor") * 2:
            intruder = _tls_client(broker.port, pki, "dA", client_id)
            intruder.loop_start()
            time.sleep(0.5)
            assert intruder.is_connected()  # A itself may connect; only its client id is its own login
            intruder.disconnect()
            intruder.loop_stop()
        device_b.event("bundle.activated", version="1")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not monitor.messages_total["event"]:
            time.sleep(0.05)
        assert monitor.devices[("f1", "dB")].messages["event"] == 1
        assert device_b.connects == 1 and ingest.connected.is_set()
        assert "closing old connection" not in broker.log()
    finally:
        device_b.stop()
        ingest.stop()
        broker.stop()
