"""Tests for the agent's TOML configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekws.agent._config import AgentConfig, ConfigError, WavSourceConfig, load_config
from edgekws.agent.backends import EmulatorBackend, OnnxBackend
from edgekws.agent.mqtt import BrokerUrl

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "agent.example.toml"

MINIMAL = """\
[device]
id = "box-1"

[store]
dir = "bundles"

[source]
type = "wav"
path = "audio"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid() -> None:
    """The shipped example config validates, and its backends keep their order."""
    cfg = load_config(EXAMPLE)
    assert [b.type for b in cfg.backends] == ["loihi2", "lava-sim", "onnx", "emulator"]
    assert isinstance(cfg.backends[2], OnnxBackend.Config)
    assert cfg.backends[2].providers[0] == "CUDAExecutionProvider"
    assert cfg.telemetry.mqtt.enabled and BrokerUrl.parse(cfg.telemetry.mqtt.broker).tls  # TLS to the broker
    assert cfg.device.group is not None


def test_minimal_config_gets_defaults_and_relative_paths(tmp_path: Path) -> None:
    """Missing sections take defaults and relative paths resolve against the config file's folder."""
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert isinstance(cfg, AgentConfig)
    assert cfg.store.dir == tmp_path.resolve() / "bundles"
    assert isinstance(cfg.source, WavSourceConfig) and cfg.source.path == tmp_path.resolve() / "audio"
    assert cfg.backends == [EmulatorBackend.Config(type="emulator")]
    assert cfg.detection.lanes == 20 and cfg.source.realtime is True


def test_a_relative_file_url_in_allowed_urls_is_relative_to_the_config(tmp_path: Path) -> None:
    """`allowed_urls = ["file:../dist/"]` (deploy/agent.local.toml) names a folder beside the config's, like
    every relative path in the config; absolute file and https entries stay as written."""
    text = (
        MINIMAL + '\n[rollout]\nallowed_urls = ["file:../dist/", "file:///srv/in/", "https://b.example/r/"]\n'
    )
    (tmp_path / "deploy").mkdir()
    cfg = load_config(_write(tmp_path / "deploy", text))
    assert cfg.rollout.allowed_urls == [
        (tmp_path.resolve() / "dist").as_uri() + "/",
        "file:///srv/in/",
        "https://b.example/r/",
    ]


def test_every_problem_is_reported_with_its_line_and_fix(tmp_path: Path) -> None:
    """One ConfigError lists every fault with the file, the line of the key and a fix."""
    text = MINIMAL.replace('dir = "bundles"', 'dir = "bundles"\ncolour = 1') + (
        '\n[[backends]]\ntype = "emulator"\n\n[[backends]]\ntype = "onnx"\nthreads = 0\n'
        "\n[detection]\nthreshold = 2.0\n"
    )
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = {p.key: p for p in info.value.problems}
    lines = text.splitlines()
    assert set(problems) == {"store.colour", "backends[1].threads", "detection.threshold"}
    expected = [
        ("store.colour", "colour"),
        ("backends[1].threads", "threads"),
        ("detection.threshold", "threshold"),
    ]
    for key, needle in expected:
        p = problems[key]
        assert p.file == str(path)
        assert p.line is not None and needle in lines[p.line - 1]
    assert "keep_versions" in problems["store.colour"].fix  # lists the known keys
    assert f"{path}:" in str(info.value)


def test_unknown_backend_type_names_the_allowed_ones(tmp_path: Path) -> None:
    """A backend type that does not exist is refused with the list of valid types."""
    path = _write(tmp_path, MINIMAL + '\n[[backends]]\ntype = "tpu"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.key == "backends[0]" and "emulator" in problem.fix and "onnx" in problem.fix
    assert problem.line == MINIMAL.count("\n") + 2


def test_missing_required_key_points_at_its_table(tmp_path: Path) -> None:
    """A required key that is absent is reported at its table's header with what to add."""
    path = _write(tmp_path, MINIMAL.replace('path = "audio"\n', ""))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.key == "source.path" and problem.line == 7 and "add `path" in problem.fix


def test_toml_syntax_error_has_a_line(tmp_path: Path) -> None:
    """Broken TOML is a ConfigError with the line the parser stopped at."""
    path = _write(tmp_path, MINIMAL + "\n[logging\nlevel = 'info'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].line == MINIMAL.count("\n") + 2


def test_mqtt_settings_resolve_paths_and_parse_the_broker(tmp_path: Path) -> None:
    """An enabled MQTT table gives host, port and TLS from the broker URL and resolves its file paths."""
    text = MINIMAL.replace('id = "box-1"', 'id = "box-1"\ngroup = "canary"') + (
        '\n[telemetry.mqtt]\nenabled = true\nbroker = "mqtts://broker.lan"\nusername = "lab/box-1"\n'
        'password_file = "mqtt.pass"\noutbox = "state/outbox.sqlite"\ndelivery = "broker"\n'
        '\n[telemetry.mqtt.tls]\nca_file = "ca.pem"\ncert_file = "box.pem"\nkey_file = "box.key"\n'
    )
    cfg = load_config(_write(tmp_path, text))
    mq = cfg.telemetry.mqtt
    url = BrokerUrl.parse(mq.broker)
    assert (
        mq.enabled and (url.host, url.port, url.tls) == ("broker.lan", 8883, True) and mq.delivery == "broker"
    )
    assert mq.password_file == tmp_path.resolve() / "mqtt.pass"
    assert mq.outbox == tmp_path.resolve() / "state" / "outbox.sqlite"
    assert mq.tls is not None and mq.tls.key_file == tmp_path.resolve() / "box.key"
    assert cfg.device.group == "canary" and cfg.rollout.health_max_latency_ms > 0


def test_mqtt_config_problems_are_reported_with_lines(tmp_path: Path) -> None:
    """A malformed broker URL, an unknown MQTT key and mqtts without TLS files are all reported."""
    text = MINIMAL + '\n[telemetry.mqtt]\nenabled = true\nbroker = "http://x:1883"\nhost = "x"\n'
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    problems = {p.key: p for p in info.value.problems}
    assert set(problems) == {"telemetry.mqtt.broker", "telemetry.mqtt.host"}
    assert "mqtt://host:1883" in problems["telemetry.mqtt.broker"].message
    assert problems["telemetry.mqtt.host"].line == MINIMAL.count("\n") + 5
    assert "password_file" in problems["telemetry.mqtt.host"].fix  # lists the known keys
    no_tls = MINIMAL + '\n[telemetry.mqtt]\nenabled = true\nbroker = "mqtts://x"\n'
    with pytest.raises(ConfigError, match="ca_file"):
        load_config(_write(tmp_path, no_tls))


def test_every_field_has_a_description() -> None:
    """Every field of every config model carries a description (shown in errors and docs)."""
    from pydantic import BaseModel

    seen: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [AgentConfig]
    from edgekws.agent._config import _models_in

    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            todo += [m for m in _models_in(field.annotation) if issubclass(m, BaseModel)]
    assert len(seen) >= 10
