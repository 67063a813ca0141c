"""Tests for the bundle manifest: validation, semver precedence, canonical bytes, activation rule."""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekws.packaging import (
    DetectionSpec,
    FileEntry,
    Lineage,
    Manifest,
    ManifestError,
    Metrics,
    NetworkSpec,
    RollbackRefused,
    SemVer,
    canonical_json,
    check_activation,
)
from edgekws.packaging._manifest import format_created, parse_created

NETWORK = NetworkSpec(
    num_inputs=16, hidden=(8,), recurrent=(True,), num_outputs=3, class_names=("a", "b", "c")
)
FRONTEND = {"type": "edgekws.frontend", "format_version": 1, "dt_ms": 1.0, "num_bands": 4}


def manifest(**overrides: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "kws-digits",
        "version": "1.2.0",
        "created": "2026-05-09T07:35:25Z",
        "producer_version": "0.1.0",
        "labels": ("a", "b", "c"),
        "frontend": FRONTEND,
        "network": NETWORK.to_dict(),
        "quantization": {"type": "edgekws.quantization", "format_version": 1, "weight_bits": 8},
        "backends": ("lava_fixed_pt", "onnx_cpu"),
        "metrics": Metrics(float={"accuracy": 0.91}, fixed_point={"accuracy": 0.9}),
        "lineage": Lineage("1.1.0", "run-42", "sha256:abc"),
        "files": {"model/netx.h5": FileEntry("0" * 64, 10)},
    }
    fields.update(overrides)
    return Manifest(**fields)


def test_round_trip_through_canonical_bytes_is_exact() -> None:
    """to_dict → canonical bytes → from_bytes rebuilds an equal manifest with the same bytes."""
    m = manifest(
        metrics=Metrics({"accuracy": 0.91}, {"accuracy": 0.9}, {"lava_fixed_pt": {"latency_ms": 1.5}})
    )
    again = Manifest.from_bytes(m.canonical_bytes())
    assert again == m
    assert again.canonical_bytes() == m.canonical_bytes()
    assert again.network_spec() == NETWORK


def test_canonical_json_is_sorted_compact_utf8_with_newline() -> None:
    """Canonical JSON sorts keys, has no spaces, keeps non-ASCII as UTF-8 and ends in one newline."""
    assert canonical_json({"b": 1, "a": ["ü", 1.5]}) == '{"a":["ü",1.5],"b":1}\n'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_non_canonical_manifest_bytes_are_refused() -> None:
    """Re-indented, reordered or duplicate-key manifest JSON is refused even if it means the same thing."""
    m = manifest()
    pretty = json.dumps(m.to_dict(), indent=1).encode() + b"\n"
    with pytest.raises(ManifestError, match="canonical"):
        Manifest.from_bytes(pretty)
    dup = m.canonical_bytes().replace(b'{"backends"', b'{"name":"evil","backends"', 1)
    with pytest.raises(ManifestError, match="duplicate key 'name'"):
        Manifest.from_bytes(dup)


def test_every_problem_is_reported_at_once() -> None:
    """A manifest with many faults raises one ManifestError naming each of them."""
    with pytest.raises(ManifestError) as info:
        manifest(
            name="Bad Name",
            version="1.2",
            created="yesterday",
            labels=("a", "a"),
            backends=("CPU!",),
            metrics=Metrics(float={"accuracy": float("nan")}),
            files={"../etc/passwd": FileEntry("xyz", -1)},
        )
    text = str(info.value)
    needles = ["name must be", "version must be semantic", "created must be", "labels must be unique"]
    needles += ["backends must be", "metrics.float", "'model/' followed by", "sha256 must be", "size must be"]
    for needle in needles:
        assert needle in text, needle
    assert len(info.value.problems) >= 9


def test_labels_must_match_the_network() -> None:
    """Labels must name every network output, in the order of network.class_names."""
    with pytest.raises(ManifestError, match="labels name 2 classes but the network has 3 outputs"):
        manifest(labels=("a", "b"))
    with pytest.raises(ManifestError, match=r"labels must equal network\.class_names"):
        manifest(labels=("c", "b", "a"))


def test_frontend_and_network_must_agree_on_dt() -> None:
    """A front-end stepping at another dt than the network is refused."""
    with pytest.raises(ManifestError, match=r"frontend\.dt_ms \(2\.0\) and network\.dt_ms \(1\.0\)"):
        manifest(frontend={**FRONTEND, "dt_ms": 2.0})


def test_specs_must_be_tagged() -> None:
    """Embedded specs need a type and a format_version so readers can dispatch on them."""
    with pytest.raises(ManifestError, match="frontend must carry a string 'type'"):
        manifest(frontend={"dt_ms": 1.0})
    with pytest.raises(ManifestError, match="network: invalid network spec"):
        manifest(network={**NETWORK.to_dict(), "num_inputs": -1})


def test_parent_version_must_be_lower() -> None:
    """lineage.parent_version must precede the version."""
    with pytest.raises(ManifestError, match=r"parent_version 1\.2\.0 must be lower"):
        manifest(lineage=Lineage(parent_version="1.2.0"))


def test_unknown_and_missing_fields_are_listed() -> None:
    """from_dict refuses unknown fields (they would be signed but ignored) and lists missing ones."""
    d = manifest().to_dict()
    d["colour"] = "blue"
    del d["labels"]
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict(d)
    assert "unknown fields ['colour']" in str(info.value) and "missing fields ['labels']" in str(info.value)


def test_newer_format_version_says_upgrade() -> None:
    """A manifest from a newer format asks the user to upgrade edgekws."""
    d = {**manifest().to_dict(), "format_version": 3}
    with pytest.raises(ManifestError, match="upgrade edgekws"):
        Manifest.from_dict(d)


ALWAYS_ON = DetectionSpec(
    "always_on", background_label="c", smoothing_ms=60.0, threshold=0.7, min_margin=0.2, refractory_ms=800.0,
    tuned_on="val stream, 5 min",
)  # fmt: skip


def test_a_detection_spec_makes_format_2_and_round_trips() -> None:
    """With a detection spec the manifest is format 2 and carries it byte for byte; without, format 1 (the
    bytes of older bundles), read as a per-utterance model."""
    m = manifest(detection=ALWAYS_ON)
    d = m.to_dict()
    assert d["format_version"] == 2 and d["detection"]["mode"] == "always_on"
    again = Manifest.from_bytes(m.canonical_bytes())
    assert again.canonical_bytes() == m.canonical_bytes()
    assert again.detection_spec() == ALWAYS_ON
    lanes = manifest(detection=DetectionSpec("lanes"))
    assert lanes.to_dict()["detection"] == {"type": "edgekws.detection", "format_version": 1, "mode": "lanes"}
    old = manifest()
    assert old.to_dict()["format_version"] == 1 and "detection" not in old.to_dict()
    assert old.detection_spec().mode == "lanes"


def test_detection_fields_are_checked_against_the_format_and_the_labels() -> None:
    """Format 2 needs its detection spec, format 1 has none; the background class must be a label; a bad
    spec is a manifest problem naming the field."""
    d = manifest(detection=ALWAYS_ON).to_dict()
    with pytest.raises(ManifestError, match="missing fields \\['detection'\\]"):
        Manifest.from_dict({k: v for k, v in d.items() if k != "detection"})
    with pytest.raises(ManifestError, match="unknown fields \\['detection'\\]"):
        Manifest.from_dict({**d, "format_version": 1})
    with pytest.raises(ManifestError, match="background_label 'x' must be one of the labels"):
        manifest(detection={**ALWAYS_ON.to_dict(), "background_label": "x"})
    with pytest.raises(ManifestError, match="threshold must lie in"):
        manifest(detection={**ALWAYS_ON.to_dict(), "threshold": 1.5})
    with pytest.raises(ManifestError, match="unknown \\['colour'\\]"):
        manifest(detection={**ALWAYS_ON.to_dict(), "colour": 1})


def test_lone_surrogates_are_a_manifest_problem_not_a_crash() -> None:
    """Text that cannot be encoded as UTF-8 is reported as a ManifestError."""
    data = manifest().canonical_bytes().replace(b'"run-42"', b'"\\ud800"')
    with pytest.raises(ManifestError, match="canonical JSON"):
        Manifest.from_bytes(data)


SEMVER_ORDER = [
    "0.9.9",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "1.10.0",
    "2.0.0",
]


def test_semver_precedence_follows_the_spec() -> None:
    """Versions sort by semver §11 precedence, including pre-release identifiers (semver.org example)."""
    parsed = [SemVer.parse(v) for v in SEMVER_ORDER]
    shuffled = list(reversed(parsed))
    assert [str(v) for v in sorted(shuffled, key=SemVer.precedence_key)] == SEMVER_ORDER
    assert all(a < b for a, b in itertools.pairwise(parsed))
    a, b = SemVer.parse("1.0.0+build.1"), SemVer.parse("1.0.0+build.2")
    assert a != b and a.same_precedence(b) and not a < b and not b < a


@pytest.mark.parametrize(
    "bad", ["1.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0\n", "١.0.0", "1.0.0+"]
)
def test_invalid_semver_is_refused(bad: str) -> None:
    """Malformed versions (leading zeros, missing parts, non-ASCII digits, trailing newline) are refused."""
    with pytest.raises(ValueError, match="semantic"):
        SemVer.parse(bad)


@given(st.lists(st.sampled_from(SEMVER_ORDER), min_size=2, max_size=6))
@settings(max_examples=50, database=None)
def test_semver_order_is_total_and_consistent(versions: list[str]) -> None:
    """Sorting by precedence agrees with the reference order for any sample."""
    got = sorted(versions, key=lambda v: SemVer.parse(v).precedence_key())
    assert got == sorted(versions, key=SEMVER_ORDER.index)


def test_created_is_utc_whole_seconds() -> None:
    """created is formatted in UTC whole seconds and naive datetimes are refused."""
    when = datetime(2026, 5, 9, 9, 35, 25, 123, tzinfo=timezone(timedelta(hours=2)))
    assert format_created(when) == "2026-05-09T07:35:25Z"
    assert parse_created("2026-05-09T07:35:25Z") == when.replace(microsecond=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        format_created(datetime(2026, 1, 1))
    with pytest.raises(ManifestError, match="created must be UTC"):
        manifest(created="2026-05-09T07:35:25+02:00")


def test_activation_rule_refuses_lower_versions_unless_rolling_back() -> None:
    """Higher versions upgrade, equal ones reinstall, lower ones need allow_rollback, other names refused."""
    old, new = manifest(version="1.1.0", lineage=Lineage()), manifest(version="1.2.0")
    assert check_activation(None, old) == "install"
    assert check_activation(old, new) == "upgrade"
    assert check_activation(new, new) == "reinstall"
    with pytest.raises(RollbackRefused, match=r"lower than the active 1\.2\.0"):
        check_activation(new, old)
    assert check_activation(new, old, allow_rollback=True) == "rollback"
    rc = manifest(version="1.2.0-rc.1", lineage=Lineage())
    with pytest.raises(RollbackRefused):
        check_activation(new, rc)
    other = dataclasses.replace(new, name="kws-commands")
    with pytest.raises(RollbackRefused, match="not a version of the active model"):
        check_activation(new, other)
    assert check_activation(new, other, allow_rename=True) == "upgrade"
