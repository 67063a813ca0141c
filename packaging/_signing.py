"""Ed25519 keys, key files, manifest signatures and trust stores.

A key's id is the first 16 hex digits of the sha256 of its 32 raw public-key bytes. What is signed is
``SIGNING_CONTEXT + manifest_bytes``: the context string (domain separation) keeps a manifest signature from
being valid for any other message an edgekws key might sign later (fleet commands, for instance).

Key files: private keys are PKCS#8 PEM (``NAME.key``, mode 0600), public keys SubjectPublicKeyInfo PEM
(``NAME.pub``) — what ``openssl pkey`` reads — and both may also be the 32 raw key bytes. The
``cryptography`` package is imported on first use, so importing edgekws.packaging stays cheap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekws.packaging._errors import KeyFileError
from edgekws.packaging._manifest import canonical_json, parse_json_strict

SIGNING_CONTEXT = b"edgekws-bundle-manifest-v1\x00"
#: The context of a signed deploy order (docs/mqtt.md, "Authorization"): a manifest signature can never
#: pass for an order, nor the other way round.
ORDER_CONTEXT = b"edgekws-deploy-order-v1\x00"
SIGNATURE_TYPE = "edgekws.signature"
SIGNATURE_FORMAT_VERSION = 1
ALGORITHM = "ed25519"
_PEM_PRIVATE = b"-----BEGIN PRIVATE KEY-----"
KEY_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_PEM_PUBLIC = b"-----BEGIN PUBLIC KEY-----"


def _is_raw_key(data: bytes, source: str, pem_header: bytes, kind: str) -> bool:
    """True for 32 raw key bytes; False for a PEM with ``pem_header``; :class:`KeyFileError` otherwise."""
    if len(data) == 32 and not data.startswith(b"-----"):
        return True
    if not data.lstrip().startswith(pem_header):
        raise KeyFileError(
            f"{source} is not an Ed25519 {kind} key: expected a PEM '{kind.upper()} KEY' or 32 raw bytes "
            "(make one with `edgekws keys generate`)"
        )
    return False


def key_id(raw_public: bytes) -> str:
    """The id of a public key: the first 16 hex digits of sha256 of its 32 raw bytes."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key (32 raw bytes)."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 32:
            raise KeyFileError("an Ed25519 public key is exactly 32 bytes")

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    def verify(self, signature: bytes, manifest_bytes: bytes, context: bytes = SIGNING_CONTEXT) -> bool:
        """True if ``signature`` is this key's signature of ``manifest_bytes`` (with the signing context)."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, context + manifest_bytes)
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "public key") -> PublicKey:
        """Read a PEM (SubjectPublicKeyInfo) or raw 32-byte public key."""
        if _is_raw_key(data, source, _PEM_PUBLIC, "public"):
            return cls(data)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise KeyFileError(f"{source} is a malformed PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{source} is a {type(key).__name__}, not an Ed25519 key; bundles use Ed25519")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@dataclass(frozen=True, repr=False)
class SigningKey:
    """An Ed25519 private key (its 32-byte seed). Its repr never shows the seed."""

    seed: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != 32:
            raise KeyFileError("an Ed25519 private key is exactly 32 bytes")

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(os.urandom(32))

    def _key(self) -> Any:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public_key(self) -> PublicKey:
        from cryptography.hazmat.primitives import serialization

        raw = (
            self._key().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        return PublicKey(raw)

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    def sign(self, manifest_bytes: bytes, context: bytes = SIGNING_CONTEXT) -> bytes:
        """The 64-byte Ed25519 signature of ``context + manifest_bytes`` (deterministic; the context is the
        manifest's unless given)."""
        return bytes(self._key().sign(context + manifest_bytes))

    def to_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(
            self._key().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "private key") -> SigningKey:
        """Read a PEM (PKCS#8, unencrypted) or raw 32-byte private key."""
        if _is_raw_key(data, source, _PEM_PRIVATE, "private"):
            return cls(data)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{source} is a malformed or encrypted PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{source} is a {type(key).__name__}, not an Ed25519 key; bundles use Ed25519")
        return cls(
            key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        )


# --------------------------------------------------------------------------------------------------------
# Key files


def write_keypair(out_dir: Path, name: str = "edgekws", key: SigningKey | None = None) -> SigningKey:
    """Write ``NAME.key`` (PEM, mode 0600) and ``NAME.pub`` (PEM) into ``out_dir``; never overwrites."""
    if not isinstance(name, str) or not KEY_NAME_PATTERN.fullmatch(name):
        raise KeyFileError(
            f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-' (no '/' and not starting with "
            "'.'): it names the files NAME.key and NAME.pub inside --out"
        )
    key = key or SigningKey.generate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    private, public = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise KeyFileError(f"{path} already exists; choose another --name or move the old key away")
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.to_pem())
    public.write_bytes(key.public_key.to_pem())
    return key


def load_private_key(path: Path | str) -> SigningKey:
    """Read a private key file, refusing one that group or others can read (like ssh does)."""
    path = Path(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from exc
    if sys.platform != "win32" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"private key {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return SigningKey.from_bytes(data, str(path))


def load_public_key(path: Path | str) -> PublicKey:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from exc
    return PublicKey.from_bytes(data, str(path))


class TrustStore(Mapping[str, PublicKey]):
    """The public keys a reader trusts, by key id: built from key files, directories of ``*.pub``, or keys."""

    def __init__(self, keys: Iterable[PublicKey] = ()) -> None:
        self._keys = {k.key_id: k for k in keys}

    @classmethod
    def from_paths(cls, paths: Iterable[Path | str]) -> TrustStore:
        """Keys from files (PEM or raw) and directories (every ``*.pub`` in them, sorted)."""
        keys: list[PublicKey] = []
        for p in map(Path, paths):
            if p.is_dir():
                found = sorted(p.glob("*.pub"))
                if not found:
                    raise KeyFileError(f"trust directory {p} holds no *.pub files")
                keys += [load_public_key(f) for f in found]
            else:
                keys.append(load_public_key(p))
        return cls(keys)

    def __getitem__(self, kid: str) -> PublicKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"TrustStore({sorted(self._keys)})"


TrustLike = TrustStore | Iterable[PublicKey | Path | str]


def as_trust_store(trusted: TrustLike) -> TrustStore:
    """A TrustStore from a TrustStore, or from an iterable of PublicKeys and key-file/directory paths."""
    if isinstance(trusted, TrustStore):
        return trusted
    if isinstance(trusted, (str, Path)):
        return TrustStore.from_paths([trusted])
    items = list(trusted)
    keys = [k for k in items if isinstance(k, PublicKey)]
    paths = [p for p in items if not isinstance(p, PublicKey)]
    return TrustStore([*keys, *TrustStore.from_paths(paths).values()])


# --------------------------------------------------------------------------------------------------------
# The `signature` file


@dataclass(frozen=True)
class Signature:
    """One signature of the manifest: the signing key's id and the 64 signature bytes."""

    key_id: str
    signature: bytes


def signature_file_bytes(signatures: Iterable[Signature]) -> bytes:
    """The canonical JSON of the ``signature`` member (several signatures allow key rotation)."""
    return canonical_json(
        {
            "type": SIGNATURE_TYPE,
            "format_version": SIGNATURE_FORMAT_VERSION,
            "signatures": [
                {
                    "algorithm": ALGORITHM,
                    "key_id": s.key_id,
                    "signature": base64.b64encode(s.signature).decode("ascii"),
                }
                for s in signatures
            ],
        }
    )


def sign_manifest(manifest_bytes: bytes, keys: Iterable[SigningKey]) -> bytes:
    """The ``signature`` member for ``manifest_bytes`` signed by each of ``keys``."""
    return signature_file_bytes(Signature(k.key_id, k.sign(manifest_bytes)) for k in keys)


def parse_signature_file(data: bytes) -> list[Signature]:
    """Parse the ``signature`` member; raises ``ValueError`` saying what is malformed."""
    obj = parse_json_strict(data)
    if not isinstance(obj, dict) or set(obj) != {"type", "format_version", "signatures"}:
        raise ValueError("must be an object with exactly type, format_version and signatures")
    if obj["type"] != SIGNATURE_TYPE or obj["format_version"] != SIGNATURE_FORMAT_VERSION:
        raise ValueError(
            f"type/format_version must be {SIGNATURE_TYPE!r}/{SIGNATURE_FORMAT_VERSION}, got "
            f"{obj['type']!r}/{obj['format_version']!r}"
        )
    entries = obj["signatures"]
    if not isinstance(entries, list) or not entries:
        raise ValueError("signatures must be a non-empty list")
    out: list[Signature] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or set(e) != {"algorithm", "key_id", "signature"}:
            raise ValueError(f"signatures[{i}] must have exactly algorithm, key_id and signature")
        if e["algorithm"] != ALGORITHM:
            raise ValueError(f"signatures[{i}].algorithm must be {ALGORITHM!r}, got {e['algorithm']!r}")
        kid, sig = e["key_id"], e["signature"]
        if not isinstance(kid, str) or len(kid) != 16 or any(c not in "0123456789abcdef" for c in kid):
            raise ValueError(f"signatures[{i}].key_id must be 16 lowercase hex digits")
        try:
            raw = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 64:
            raise ValueError(f"signatures[{i}].signature must be 64 bytes in base64")
        out.append(Signature(kid, raw))
    if len({s.key_id for s in out}) != len(out):
        raise ValueError("a key id signs more than once")
    if signature_file_bytes(out) != data:
        raise ValueError(
            "not in canonical form; it was edited by hand or by another tool: re-sign the bundle"
        )
    return out


# --------------------------------------------------------------------------------------------------------
# Detached signatures of other documents (deploy orders)


def sign_detached(body: bytes, keys: Iterable[SigningKey], context: bytes) -> list[dict[str, str]]:
    """Signatures of ``body`` under ``context`` as ``{"algorithm", "key_id", "signature" (base64)}``."""
    return [
        {
            "algorithm": ALGORITHM,
            "key_id": k.key_id,
            "signature": base64.b64encode(k.sign(body, context)).decode("ascii"),
        }
        for k in keys
    ]


def verify_detached(
    body: bytes, signatures: Iterable[tuple[str, str]], trusted: Mapping[str, PublicKey], context: bytes
) -> list[str]:
    """The trusted key ids whose (key id, base64 signature) pairs verify ``body`` under ``context``."""
    verified = []
    for kid, sig in signatures:
        key = trusted.get(kid)
        if key is None:
            continue
        try:
            raw = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 64 and key.verify(raw, body, context):
            verified.append(kid)
    return verified
