"""Property tests: damaged and malicious bundles are refused with InvalidBundle and write nothing.

Each case is pushed into a fresh temp store (which verifies it) and opened directly; the test asserts
that InvalidBundle is raised (any other exception fails the test), that every problem has a message,
and that the temp directory holding the input and the store is byte-for-byte unchanged. The number of
cases run per property is printed at the end of the module (see docs/bundle.md for the recorded counts).
"""

from __future__ import annotations

import collections
import io
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekws.packaging import (
    BundleStore,
    InvalidBundle,
    Limits,
    Lineage,
    Manifest,
    Metrics,
    SigningKey,
    bundle_bytes,
    canonical_json,
    open_bundle,
)
from edgekws.packaging._signing import sign_manifest

KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(100, 132)))
TRUST = [KEY.public_key]
EVIL = "edgekws-fuzz-evil"
MANIFEST = Manifest(
    name="kws", version="1.0.0", created="2026-05-09T07:35:25Z", producer_version="0.1.0",
    labels=("on", "off"), frontend={"type": "edgekws.frontend", "format_version": 1},
    network={"type": "edgekws.network", "format_version": 1, "num_inputs": 4, "hidden": [3],
             "recurrent": [True], "num_outputs": 2},
    metrics=Metrics(float={"accuracy": 0.5}), lineage=Lineage(),
)  # fmt: skip
FILES = {"model/float.npz": b"F" * 700, "model/netx.h5": bytes(range(256)) * 3}
VALID, FINAL = bundle_bytes(MANIFEST, FILES, KEY)
MEMBERS = [
    ("manifest.json", FINAL.canonical_bytes()),
    ("signature", sign_manifest(FINAL.canonical_bytes(), [KEY])),
]
MEMBERS += sorted(FILES.items())
COUNTS: collections.Counter[str] = collections.Counter()


def fuzz(cases: int) -> settings:
    """Settings for one property: ``cases`` examples, no deadline (shared CI cores), no example database."""
    return settings(
        max_examples=cases, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    print(f"\nfuzz cases run: {dict(COUNTS)} total {sum(COUNTS.values())}")


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


def assert_refused(data: bytes, kind: str, limits: Limits | None = None) -> InvalidBundle:
    """Push ``data`` into a fresh temp store and open it: both must raise InvalidBundle, writing nothing."""
    COUNTS[kind] += 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        (work / "in.ekb").write_bytes(data)
        before = _snapshot(work)
        with pytest.raises(InvalidBundle) as pushed:
            BundleStore(work / "store", TRUST, limits).push(work / "in.ekb")
        assert _snapshot(work) == before
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["work"]
    for parent in (Path(tempfile.gettempdir()), Path.cwd()):
        assert not (parent / EVIL).exists()
    with pytest.raises(InvalidBundle) as opened:
        open_bundle(data, TRUST, limits)
    assert opened.value.problems and all(p.message for p in opened.value.problems)
    assert pushed.value.codes == opened.value.codes
    return opened.value


def craft(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """A tar made by Python's tarfile (GNU format, so any name fits), independent of our writer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in members:
            info.size = len(data) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tf.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def valid_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [regular(n, d) for n, d in MEMBERS]


def test_the_unmodified_bundle_is_accepted() -> None:
    """The base case of every property opens cleanly (so refusals below are caused by the damage)."""
    assert dict(open_bundle(VALID, TRUST).files) == FILES
    assert dict(open_bundle(craft(valid_members()), TRUST).files) == FILES


@fuzz(150)
@given(st.integers(min_value=0, max_value=len(VALID) - 1))
def test_truncated_bundles_are_refused(cut: int) -> None:
    """A bundle cut at any offset is refused."""
    assert_refused(VALID[:cut], "truncated")


@fuzz(300)
@given(st.integers(min_value=0, max_value=8 * len(VALID) - 1))
def test_any_single_bit_flip_is_refused(bit: int) -> None:
    """Flipping any one bit anywhere (headers, padding, manifest, signature, data, end marker) is refused."""
    data = bytearray(VALID)
    data[bit // 8] ^= 1 << (bit % 8)
    assert_refused(bytes(data), "bit-flip")


@fuzz(150)
@given(st.lists(st.integers(min_value=0, max_value=8 * len(VALID) - 1), min_size=2, max_size=8, unique=True))
def test_multiple_bit_flips_never_change_what_is_trusted(bits: list[int]) -> None:
    """Several flips are refused, or (if they cancel out in ignored header fields) change no trusted byte."""
    data = bytearray(VALID)
    for bit in bits:
        data[bit // 8] ^= 1 << (bit % 8)
    COUNTS["multi-bit-flip"] += 1
    try:
        bundle = open_bundle(bytes(data), TRUST)
    except InvalidBundle as exc:
        assert exc.problems
    else:
        assert bundle.manifest_bytes == FINAL.canonical_bytes() and dict(bundle.files) == FILES


def _with_size_field(data: bytes, member: int, size: int) -> bytes:
    """Rewrite member #``member``'s size field (and its header checksum) to claim ``size`` bytes."""
    out = bytearray(data)
    pos = 0
    for _ in range(member):
        declared = int(out[pos + 124 : pos + 136].rstrip(b"\0 ") or b"0", 8)
        pos += 512 + declared + (-declared % 512)
    out[pos + 124 : pos + 136] = b"%011o\0" % size
    out[pos + 148 : pos + 156] = b" " * 8
    out[pos + 148 : pos + 156] = b"%06o\0 " % sum(out[pos : pos + 512])
    return bytes(out)


@fuzz(60)
@given(st.integers(min_value=0, max_value=3), st.integers(min_value=5000, max_value=8**11 - 1))
def test_members_claiming_huge_sizes_are_refused(member: int, size: int) -> None:
    """A header claiming more bytes than the limit or the file holds is refused without reading on."""
    err = assert_refused(
        _with_size_field(VALID, member, size), "oversized-header", Limits(max_member_bytes=4096)
    )
    assert err.codes & {"size-limit", "truncated"}


@fuzz(40)
@given(st.integers(min_value=1, max_value=700))
def test_members_over_the_limit_are_refused(limit: int) -> None:
    """Real members larger than a configured per-member limit are refused as size-limit problems."""
    err = assert_refused(VALID, "oversized-member", Limits(max_member_bytes=limit))
    assert "size-limit" in err.codes


_component = st.text(alphabet="abcXYZ09._-", min_size=1, max_size=8)
BAD_NAMES = st.one_of(
    st.integers(1, 6).map(lambda k: "../" * k + EVIL),
    st.integers(1, 4).map(lambda k: "model/" + "../" * k + EVIL),
    st.sampled_from(["/" + EVIL, "/tmp/" + EVIL, "//" + EVIL, "/model/netx.h5", "/manifest.json"]),
    st.sampled_from(["model/./netx.h5", "model//netx.h5", "./manifest.json", "model\\..\\" + EVIL, "model/"]),
    st.sampled_from(["model/.hidden", "model/-x", "README.md", "model.onnx", "models/x", "model/a\nb", ""]),
    _component.map(lambda c: f"model/{c}/../../{EVIL}"),
    _component.map(lambda c: f"{c}/{EVIL}"),
)


@fuzz(120)
@given(BAD_NAMES, st.binary(max_size=64), st.integers(min_value=0, max_value=4))
def test_bad_member_names_are_refused(name: str, data: bytes, where: int) -> None:
    """Traversal ('..'), absolute paths, '.'/empty components and names outside the layout are refused."""
    members = valid_members()
    members.insert(where, regular(name, data))
    err = assert_refused(craft(members), "bad-name")
    assert err.codes & {"member-name", "layout", "member-type", "extra-file"}


LINK_TYPES = [
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.FIFOTYPE,
    tarfile.DIRTYPE,
]


@fuzz(80)
@given(
    st.sampled_from(LINK_TYPES),
    st.sampled_from(["model/netx.h5", "model/float.npz", "model/new.bin", "manifest.json", "signature"]),
    st.sampled_from(["/etc/passwd", "../../" + EVIL, "model/netx.h5", "/tmp/" + EVIL, ""]),
    st.booleans(),
)
def test_links_devices_and_odd_directories_are_refused(
    kind: bytes, name: str, target: str, replace: bool
) -> None:
    """Symlinks, hard links, devices, FIFOs and directory members with file names are refused."""
    members = valid_members()
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    if replace:
        members = [m for m in members if m[0].name != name]
    members.append((info, b""))
    err = assert_refused(craft(members), "link-or-special")
    assert err.codes & {"member-type", "duplicate"}


@fuzz(40)
@given(st.sampled_from([n for n, _ in MEMBERS]), st.binary(max_size=32), st.booleans())
def test_duplicate_members_are_refused(name: str, other: bytes, same: bool) -> None:
    """A member repeated (same or different content, where tar's 'last one wins' would bite) is refused."""
    members = valid_members()
    content = dict(MEMBERS)[name] if same else other
    members.append(regular(name, content))
    err = assert_refused(craft(members), "duplicate")
    assert "duplicate" in err.codes


def test_unsigned_bundle_is_refused() -> None:
    """A bundle without a signature member is refused as unsigned."""
    members = [m for m in valid_members() if m[0].name != "signature"]
    assert assert_refused(craft(members), "unsigned").codes == {"unsigned"}


@fuzz(20)
@given(st.binary(min_size=32, max_size=32))
def test_bundle_signed_by_another_key_is_refused(seed: bytes) -> None:
    """A bundle signed only by an untrusted key is refused, naming the signer's key id."""
    stranger = SigningKey(seed)
    data, _ = bundle_bytes(MANIFEST, FILES, stranger)
    err = assert_refused(data, "wrong-key")
    if stranger.key_id != KEY.key_id:
        assert err.codes == {"untrusted"} and stranger.key_id in str(err)


@fuzz(60)
@given(
    st.sampled_from(["labels", "metrics", "backends", "version", "created"]),
    st.integers(min_value=0, max_value=10**6),
)
def test_tampered_manifest_is_refused(field: str, n: int) -> None:
    """A manifest edited after signing (still valid and canonical) fails the signature check."""
    d = FINAL.to_dict()
    if field == "labels":
        d["labels"] = ["on", f"off{n}"]
    elif field == "metrics":
        d["metrics"]["float"]["accuracy"] = 0.5 + (n + 1) / 4e6
    elif field == "backends":
        d["backends"] = [f"cpu{n}"]
    elif field == "version":
        d["version"] = f"1.0.{n + 1}"
    else:
        d["created"] = f"2026-05-09T07:35:{n % 25:02d}Z"
    members = [(n_, b) for n_, b in MEMBERS]
    members[0] = ("manifest.json", canonical_json(d))
    err = assert_refused(craft([regular(a, b) for a, b in members]), "tampered-manifest")
    assert err.codes == {"bad-signature"}


@fuzz(60)
@given(st.sampled_from(sorted(FILES)), st.binary(min_size=1, max_size=900))
def test_tampered_model_file_is_refused(path: str, replacement: bytes) -> None:
    """A model file replaced after signing is refused as a size or sha256 mismatch naming the file."""
    if replacement == FILES[path]:
        replacement = replacement + b"!"
    members = [regular(n, replacement if n == path else d) for n, d in MEMBERS]
    err = assert_refused(craft(members), "tampered-file")
    assert err.codes <= {"file-hash", "file-size"} and path in str(err)


@fuzz(60)
@given(st.binary(max_size=3000))
def test_random_bytes_are_refused(data: bytes) -> None:
    """Arbitrary bytes are refused, never crash the reader."""
    assert_refused(data, "random-bytes")
