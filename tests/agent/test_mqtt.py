"""The MQTT contract module: generated schemas, topics, the broker-URL rule, and the session's refusals."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekws.agent.mqtt import (
    DEVICE_MESSAGES,
    BrokerRefused,
    BrokerUrl,
    ClientOptions,
    ConnectFailed,
    InvalidMessage,
    MqttSession,
    command_topic,
    device_topic,
    json_schemas,
    parse_command,
    parse_device_message,
    parse_topic,
    schema_name,
    schema_text,
    topic,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"


def test_docs_schemas_are_the_generated_ones() -> None:
    """docs/schemas/*.json equal what the message models generate (regenerate with `make schemas`)."""
    generated = json_schemas()
    on_disk = sorted(p.name for p in SCHEMA_DIR.glob("*.json"))
    assert on_disk == sorted(generated), "docs/schemas holds other files than the models generate"
    for name, schema in generated.items():
        assert (SCHEMA_DIR / name).read_text() == schema_text(schema), f"{name} drifted: run `make schemas`"


def test_examples_validate_and_round_trip_through_the_models() -> None:
    """Each schema's examples validate against it and parse with the model it was generated from."""
    for name, schema in json_schemas().items():
        jsonschema.Draft202012Validator.check_schema(schema)
        for example in schema["examples"]:
            jsonschema.validate(example, schema)
            kind = name.split(".")[0]
            if kind == "command":
                parse_command(command_topic("f", "d", example["type"]), json.dumps(example).encode())
            else:
                assert DEVICE_MESSAGES[kind].model_validate(example).payload() == example


def test_a_payload_the_schema_rejects_is_rejected_by_the_model_too() -> None:
    """An unknown key or a bad value fails both the JSON Schema and the pydantic model."""
    schema = json_schemas()["detection.schema.json"]
    good: dict[str, Any] = dict(schema["examples"][0])
    for bad in ({**good, "extra": 1}, {**good, "confidence": 1.5}, {**good, "schema": "edgekws.detection/2"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        with pytest.raises(ValueError):
            DEVICE_MESSAGES["detection"].model_validate(bad)


def test_topics_are_built_and_parsed_by_one_rule() -> None:
    """topic() and parse_topic() are inverse; foreign topics parse to None; commands name their type."""
    assert topic("f1", "d1", "telemetry") == "edgekws/v1/f1/d1/telemetry"
    parsed = parse_topic(command_topic("f1", "d1", "deploy"))
    assert parsed is not None and (parsed.fleet, parsed.device, parsed.kind, parsed.command) == (
        "f1",
        "d1",
        "cmd",
        "deploy",
    )
    assert parse_topic("other/v1/f1/d1/status") is None and parse_topic("edgekws/v1/f1") is None
    assert schema_name("telemetry") == "edgekws.telemetry/1" and schema_name("cmd") == "edgekws.cmd/1"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.lan", ("broker.lan", 1883, False, None, None)),
        ("mqtts://broker.lan", ("broker.lan", 8883, True, None, None)),
        ("ssl://b:9000", ("b", 9000, True, None, None)),
        ("b:1884", ("b", 1884, False, None, None)),
        ("mqtt://mon:p%40ss@b:1883/", ("b", 1883, False, "mon", "p@ss")),
    ],
)
def test_broker_urls_parse_by_one_rule(url: str, expected: tuple[Any, ...]) -> None:
    """Scheme, default port, TLS and login come out of every accepted form."""
    u = BrokerUrl.parse(url)
    assert (u.host, u.port, u.tls, u.username, u.password) == expected
    assert "p@ss" not in str(u)


@pytest.mark.parametrize(
    "url", ["http://b:1883", "mqtt://b:99999", "mqtt://b:1883/topic", "mqtt://", "mqtt://b:x"]
)
def test_bad_broker_urls_say_what_a_good_one_looks_like(url: str) -> None:
    """Every refused URL gets the same message naming the accepted forms."""
    with pytest.raises(ValueError, match=r"mqtt://host:1883 or mqtts://host:8883"):
        BrokerUrl.parse(url)


def test_session_refusals_are_named(tmp_path: Path, broker_factory: Any) -> None:
    """A bad login gets BrokerRefused ("broker refused the connection"), a closed port ConnectFailed; a
    good login connects and its subscription returns only once the broker's SUBACK granted it. (mosquitto
    2.0 grants every filter and filters deliveries by ACL instead, so SubscribeRefused, for brokers that
    refuse in the SUBACK, cannot be provoked here.)"""
    pki = tmp_path / "pki"
    subprocess.run(
        ["bash", str(DEPLOY / "make-device-credentials.sh"), "-d", str(pki), "f1", "u"],
        check=True,
        capture_output=True,
    )
    pw = (pki / "devices/f1/u/password").read_text().strip()
    b = broker_factory(f"allow_anonymous false\npassword_file {pki / 'passwd'}\nacl_file {DEPLOY / 'acl'}")
    login = "f1/u"
    bad = MqttSession(
        ClientOptions(BrokerUrl("127.0.0.1", b.port, username=login, password="wrong"), "t-bad")
    )
    with pytest.raises(BrokerRefused, match="broker refused the connection"):
        bad.connect(timeout_s=5)
    bad.close()
    closed = MqttSession(ClientOptions(BrokerUrl("127.0.0.1", 1), "t-closed"))
    with pytest.raises(ConnectFailed, match=r"cannot reach the broker 127\.0\.0\.1:1"):
        closed.connect(timeout_s=5)
    good = MqttSession(ClientOptions(BrokerUrl("127.0.0.1", b.port, username=login, password=pw), "t-good"))
    try:
        good.connect(timeout_s=5)
        good.subscribe(["edgekws/v1/f1/u/cmd/#"])
        assert not good.dropped
    finally:
        good.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from([*DEVICE_MESSAGES, "cmd", "other"]),
    payload=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=30,
        ).map(lambda v: json.dumps(v).encode()),
    ),
)
def test_parse_device_message_raises_only_invalid_message(kind: str, payload: bytes) -> None:
    """Whatever the bytes and whatever JSON, a device message is either a model or an InvalidMessage that
    says what is wrong -- never another exception (the monitor's ingest relies on it: H1)."""
    try:
        where, message = parse_device_message(topic("f1", "d1", kind), payload)
    except InvalidMessage as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
    else:
        assert where.kind == kind and message.payload()["schema"] == schema_name(kind)


def test_device_topics_enforce_the_id_pattern() -> None:
    """Fleet and device ids from a topic match [A-Za-z0-9_.-]+ (at most 128 characters), the kind is known
    and no level follows it (L7: a device id with an RTL override reached the dashboard)."""
    assert device_topic("edgekws/v1/lab/box-1.a_b/status") == parse_topic("edgekws/v1/lab/box-1.a_b/status")
    bad_ids = ("lab/a\u202eevil/status", "lab/<b>/event", f"{'x' * 129}/d/event", "lab//event")
    for bad in (*bad_ids, "lab/d/telemetry/more", "lab/d/bogus"):
        with pytest.raises(InvalidMessage):
            device_topic(f"edgekws/v1/{bad}")
