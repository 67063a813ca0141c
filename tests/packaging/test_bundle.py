"""Tests for writing and reading bundles: round trips, determinism, standard tools, verification."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from edgekws.packaging import (
    FileEntry,
    InvalidBundle,
    Limits,
    Lineage,
    Manifest,
    ManifestError,
    Metrics,
    SigningKey,
    build_bundle,
    bundle_bytes,
    check_bundle,
    open_bundle,
    verify_bundle,
    write_bundle,
)

GOLDEN = Path(__file__).parent / "golden" / "manifest_v1.json"
KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(1, 33)))
# Literal spec dicts (not to_dict() of today's classes): the golden bytes depend on the manifest code only.
NETWORK = {
    "type": "edgekws.network", "format_version": 1, "num_inputs": 16, "hidden": [8], "recurrent": [True],
    "num_outputs": 3, "dt_ms": 1.0, "num_steps": 100, "tau_mem_ms": 20.0, "tau_syn_ms": 5.0, "threshold": 1.0,
    "readout": "exp_weighted_mean", "class_names": ["yes", "no", "stop"],
}  # fmt: skip
FRONTEND = {
    "type": "edgekws.frontend",
    "format_version": 1,
    "sample_rate": 16000,
    "dt_ms": 1.0,
    "num_bands": 4,
}
QUANT = {"type": "edgekws.quantization", "format_version": 1, "weight_bits": 8, "scale": [0.015625]}
FILES = {
    "model/float.npz": b"float parameters " * 64,
    "model/netx.h5": bytes(range(256)) * 12,
    "model/model.onnx": b"onnx",
    "model/model.nir": b"nir graph \xff\x00",
}
# sha256 of the bundle built by fixed_bundle(): changes only if the manifest, signature or tar layout changes.
GOLDEN_BUNDLE_SHA256 = "8d443db84603cb22c906d005d985c8d6332265a03d8961580a0ee41f70a68a9d"


def base_manifest(**overrides: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "kws-demo",
        "version": "1.0.0",
        "created": "2026-05-09T07:35:25Z",
        "producer_version": "0.1.0",
        "labels": ("yes", "no", "stop"),
        "frontend": FRONTEND,
        "network": NETWORK,
        "quantization": QUANT,
        "backends": ("fixed_point_emulator", "lava_fixed_pt", "onnx_cpu"),
        "metrics": Metrics(
            float={"accuracy": 0.9375},
            fixed_point={"accuracy": 0.921875},
            backends={"onnx_cpu": {"accuracy": 0.9375, "latency_ms_p50": 0.25}},
        ),
        "lineage": Lineage(None, "run-2026-05-09", "sha256:" + "ab" * 32),
    }
    fields.update(overrides)
    return Manifest(**fields)


def fixed_bundle(**overrides: Any) -> bytes:
    data, _ = bundle_bytes(base_manifest(**overrides), FILES, KEY)
    return data


def test_round_trip(tmp_path: Path) -> None:
    """A written bundle opens with the signer's key and yields the same manifest and files."""
    path = write_bundle(tmp_path, base_manifest(), FILES, KEY)
    assert path == tmp_path / "kws-demo-1.0.0.ekb"
    bundle = open_bundle(path, [KEY.public_key])
    assert dict(bundle.files) == FILES
    assert bundle.key_ids == (KEY.key_id,)
    assert bundle.manifest.files["model/netx.h5"] == FileEntry(
        hashlib.sha256(FILES["model/netx.h5"]).hexdigest(), 3072
    )
    assert bundle.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["kws-demo-1.0.0.ekb"]  # no temp files left


def test_identical_input_gives_identical_bytes() -> None:
    """Two builds from the same inputs are byte-identical; another `created` changes the bytes."""
    assert fixed_bundle() == fixed_bundle()
    assert fixed_bundle() != fixed_bundle(created="2026-05-09T07:35:26Z")


def test_golden_manifest_bytes_are_stable() -> None:
    """The manifest of the fixed bundle equals the committed golden file byte for byte."""
    bundle = open_bundle(fixed_bundle(), [KEY.public_key])
    assert bundle.manifest_bytes == GOLDEN.read_bytes()


def test_golden_bundle_digest_is_stable() -> None:
    """The whole fixed bundle (tar headers, signature, files) has a pinned sha256 on every Python."""
    assert hashlib.sha256(fixed_bundle()).hexdigest() == GOLDEN_BUNDLE_SHA256


def test_standard_tools_read_the_bundle(tmp_path: Path) -> None:
    """`tar` and Python's tarfile list the members in layout order and extract identical bytes."""
    path = write_bundle(tmp_path, base_manifest(), FILES, KEY)
    listing = subprocess.run(["tar", "tf", str(path)], capture_output=True, text=True, check=True).stdout
    assert listing.split() == ["manifest.json", "signature", *sorted(FILES)]
    netx = subprocess.run(["tar", "xOf", str(path), "model/netx.h5"], capture_output=True, check=True).stdout
    assert netx == FILES["model/netx.h5"]
    with tarfile.open(path) as tf:
        info = tf.getmember("model/float.npz")
        assert (info.mode, info.uid, info.gid, info.uname, info.mtime) == (0o644, 0, 0, "", 1778312125)


def test_bundle_repacked_by_gnu_tar_still_verifies(tmp_path: Path) -> None:
    """Unpacking with tar and packing again (with a model/ directory entry) keeps the bundle valid."""
    path = write_bundle(tmp_path, base_manifest(), FILES, KEY)
    work = tmp_path / "x"
    work.mkdir()
    subprocess.run(["tar", "xf", str(path), "-C", str(work)], check=True)
    repacked = tmp_path / "repacked.ekb"
    subprocess.run(
        ["tar", "cf", str(repacked), "-C", str(work), "manifest.json", "signature", "model"], check=True
    )
    assert "model/" in subprocess.run(["tar", "tf", str(repacked)], capture_output=True, text=True).stdout
    assert dict(open_bundle(repacked, [KEY.public_key]).files) == FILES


def test_build_bundle_assembles_the_manifest(tmp_path: Path) -> None:
    """build_bundle takes manifest pieces and model file paths and writes NAME-VERSION.ekb."""
    src = tmp_path / "netx.h5"
    src.write_bytes(b"netx")
    out = build_bundle(
        tmp_path, name="kws", version="2.0.0-rc.1", labels=["yes", "no", "stop"], frontend=FRONTEND,
        network=NETWORK, files={"model/netx.h5": src}, private_key=KEY, quantization=QUANT,
    )  # fmt: skip
    assert out.name == "kws-2.0.0-rc.1.ekb"
    bundle = open_bundle(out, [KEY.public_key])
    assert bundle.read("model/netx.h5") == b"netx"
    assert bundle.manifest.created.endswith("Z") and bundle.manifest.producer_version


def test_writer_refuses_bad_file_lists() -> None:
    """Bad model paths, no files, or manifest.files that disagree with the files raise ManifestError."""
    with pytest.raises(ManifestError, match="'model/' followed by"):
        bundle_bytes(base_manifest(), {"netx.h5": b"x"}, KEY)
    with pytest.raises(ManifestError, match="at least one model file"):
        bundle_bytes(base_manifest(), {}, KEY)
    wrong = base_manifest(files={"model/netx.h5": FileEntry("0" * 64, 1)})
    with pytest.raises(ManifestError, match="disagrees"):
        bundle_bytes(wrong, {"model/netx.h5": b"x"}, KEY)


def test_rotation_with_two_signatures() -> None:
    """A bundle signed by an old and a new key verifies for a reader trusting either one."""
    data, _ = bundle_bytes(base_manifest(), FILES, [KEY, OTHER])
    assert open_bundle(data, [KEY.public_key]).key_ids == (KEY.key_id,)
    assert open_bundle(data, [OTHER.public_key]).key_ids == (OTHER.key_id,)
    assert set(open_bundle(data, [KEY.public_key, OTHER.public_key]).key_ids) == {KEY.key_id, OTHER.key_id}


def _repack(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]  # type: ignore[union-attr]


def test_every_problem_is_reported_at_once() -> None:
    """A bundle with a tampered, a missing and an extra file and a foreign signer reports all four."""
    members = dict(_members(fixed_bundle()))
    members["model/netx.h5"] = b"X" + members["model/netx.h5"][1:]
    del members["model/model.onnx"]
    members["model/extra.bin"] = b"?"
    with pytest.raises(InvalidBundle) as info:
        open_bundle(_repack(list(members.items())), [OTHER.public_key])
    assert info.value.codes == {"file-hash", "missing-file", "extra-file", "untrusted"}
    text = str(info.value)
    assert "model/netx.h5" in text and "model/model.onnx" in text and "model/extra.bin" in text


def test_limits_are_enforced_before_reading() -> None:
    """Members and bundles over the configured limits are refused as size-limit problems."""
    data = fixed_bundle()
    assert "size-limit" in {
        p.code for p in verify_bundle(data, [KEY.public_key], Limits(max_member_bytes=1000))
    }
    problems = verify_bundle(data, [KEY.public_key], Limits(max_total_bytes=1000))
    assert [p.code for p in problems] == ["size-limit"]


def test_gzip_and_empty_trust_are_explained(tmp_path: Path) -> None:
    """A gzipped bundle and an empty trust list each get a problem that says what to do."""
    problems = verify_bundle(gzip.compress(fixed_bundle()), [KEY.public_key])
    assert problems[0].code == "compressed" and "gunzip" in problems[0].message
    assert [p.code for p in verify_bundle(fixed_bundle(), [])] == ["untrusted"]
    missing = verify_bundle(tmp_path / "nope.ekb", [KEY.public_key])
    assert [p.code for p in missing] == ["unreadable"]


def test_check_without_trust_reads_but_never_trusts() -> None:
    """check_bundle without keys parses the manifest for inspection but is never ok."""
    report = check_bundle(fixed_bundle())
    assert report.manifest is not None and report.manifest.name == "kws-demo"
    assert not report.problems and not report.ok
    assert [s.key_id for s in report.signatures] == [KEY.key_id]


def test_extract_writes_only_inside_a_new_directory(tmp_path: Path) -> None:
    """Bundle.extract writes the model files under a new directory and refuses an existing one."""
    bundle = open_bundle(fixed_bundle(), [KEY.public_key])
    out = bundle.extract(tmp_path / "m")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(FILES)
    assert (out / "model" / "netx.h5").read_bytes() == FILES["model/netx.h5"]
    with pytest.raises(FileExistsError):
        bundle.extract(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_manifest_numbers_are_checked_for_type_and_range() -> None:
    """L2: a signed manifest whose network spec holds a float step count (1e3), a step count or layer size
    no device can hold (10^12, 10^9) is refused at verify time with a `manifest` problem."""
    from edgekws.packaging import canonical_json
    from edgekws.packaging._bundle import MANIFEST, SIGNATURE
    from edgekws.packaging._signing import sign_manifest
    from edgekws.packaging._tar import write_tar

    good = base_manifest().to_dict()
    for field, value in (
        ("num_steps", 1e3),
        ("num_steps", 10**12),
        ("hidden", [10**9]),
        ("num_inputs", True),
    ):
        doc = {**good, "network": {**good["network"], field: value}}
        doc["files"] = {
            p: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for p, b in FILES.items()
        }
        data = canonical_json(doc)
        members = [(MANIFEST, data), (SIGNATURE, sign_manifest(data, [KEY])), *sorted(FILES.items())]
        report = check_bundle(write_tar(members, mtime=0), [KEY.public_key])
        assert "manifest" in {p.code for p in report.problems}, (field, value)
        assert any(field in p.message for p in report.problems), report.problems
