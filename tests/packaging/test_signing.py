"""Tests for Ed25519 keys, key files, signatures and trust stores."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from edgekws.packaging import (
    KeyFileError,
    PublicKey,
    SigningKey,
    TrustStore,
    load_private_key,
    load_public_key,
    write_keypair,
)
from edgekws.packaging._signing import parse_signature_file, sign_manifest

SEED = bytes(range(32))


def test_key_id_is_sha256_prefix_of_raw_public_key() -> None:
    """A key id is the first 16 hex digits of sha256 of the 32 raw public-key bytes."""
    key = SigningKey(SEED)
    assert len(key.public_key.raw) == 32
    assert key.key_id == hashlib.sha256(key.public_key.raw).hexdigest()[:16]
    assert "SigningKey(key_id=" in repr(key) and SEED.hex() not in repr(key)


def test_signatures_verify_and_bind_the_bytes() -> None:
    """A signature verifies for its bytes and key only, and is deterministic."""
    key, other = SigningKey(SEED), SigningKey.generate()
    sig = key.sign(b"manifest")
    assert sig == key.sign(b"manifest") and len(sig) == 64
    assert key.public_key.verify(sig, b"manifest")
    assert not key.public_key.verify(sig, b"manifest!")
    assert not other.public_key.verify(sig, b"manifest")
    assert not key.public_key.verify(b"\x00" * 64, b"manifest")


def test_keypair_files_round_trip_with_private_mode(tmp_path: Path) -> None:
    """write_keypair writes a 0600 PEM private key and a PEM public key that load back to the same key."""
    key = write_keypair(tmp_path, "release")
    private, public = tmp_path / "release.key", tmp_path / "release.pub"
    assert (private.stat().st_mode & 0o777) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_private_key(private) == key
    assert load_public_key(public) == key.public_key
    with pytest.raises(KeyFileError, match="already exists"):
        write_keypair(tmp_path, "release")


def test_pem_files_are_readable_by_openssl(tmp_path: Path) -> None:
    """openssl reads our PEM keys as ED25519 keys (interoperability with standard tools)."""
    write_keypair(tmp_path, "k")
    out = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "k.key"), "-noout", "-text"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "ED25519" in out.stdout


def test_widely_readable_private_key_is_refused(tmp_path: Path) -> None:
    """A private key file readable by group or others is refused with the chmod fix."""
    path = tmp_path / "k.key"
    path.write_bytes(SigningKey(SEED).to_pem())
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(path)


def test_raw_key_files_are_accepted(tmp_path: Path) -> None:
    """Raw 32-byte private and public key files load like PEM ones."""
    key = SigningKey(SEED)
    (tmp_path / "raw.key").write_bytes(SEED)
    os.chmod(tmp_path / "raw.key", 0o600)
    (tmp_path / "raw.pub").write_bytes(key.public_key.raw)
    assert load_private_key(tmp_path / "raw.key") == key
    assert load_public_key(tmp_path / "raw.pub") == key.public_key


def test_malformed_key_files_say_what_is_wrong(tmp_path: Path) -> None:
    """Garbage, a private key given as public, or a non-Ed25519 key give KeyFileError with a hint."""
    (tmp_path / "junk.pub").write_bytes(b"hello")
    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        load_public_key(tmp_path / "junk.pub")
    (tmp_path / "priv.pub").write_bytes(SigningKey(SEED).to_pem())
    with pytest.raises(KeyFileError, match="expected a PEM 'PUBLIC KEY'"):
        load_public_key(tmp_path / "priv.pub")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "ec.pub").write_bytes(ec_pem)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_public_key(tmp_path / "ec.pub")
    with pytest.raises(KeyFileError, match="cannot read public key"):
        load_public_key(tmp_path / "missing.pub")


def test_trust_store_from_files_and_directories(tmp_path: Path) -> None:
    """A trust store collects keys by id from .pub files and directories of them."""
    a = write_keypair(tmp_path / "dir", "a")
    b = write_keypair(tmp_path / "dir", "b")
    c = write_keypair(tmp_path / "solo", "c")
    store = TrustStore.from_paths([tmp_path / "dir", tmp_path / "solo" / "c.pub"])
    assert set(store) == {a.key_id, b.key_id, c.key_id}
    assert store[a.key_id] == a.public_key
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyFileError, match="holds no"):
        TrustStore.from_paths([tmp_path / "empty"])


def test_signature_file_round_trip_and_strictness() -> None:
    """The signature member parses back, and any non-canonical spelling of it is refused."""
    keys = [SigningKey(SEED), SigningKey(bytes(32))]
    data = sign_manifest(b"m", keys)
    sigs = parse_signature_file(data)
    assert [s.key_id for s in sigs] == [k.key_id for k in keys]
    assert all(PublicKey(k.public_key.raw).verify(s.signature, b"m") for k, s in zip(keys, sigs, strict=True))
    with pytest.raises(ValueError, match="canonical"):
        parse_signature_file(data.replace(b",", b", ", 1))
    with pytest.raises(ValueError, match="64 bytes"):
        parse_signature_file(data.replace(b'"signature":"', b'"signature":"AA', 1))
    with pytest.raises(ValueError, match="signs more than once"):
        parse_signature_file(sign_manifest(b"m", [keys[0], keys[0]]))
