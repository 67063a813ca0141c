"""A deterministic USTAR writer and a strict, in-memory USTAR reader (no extraction, no trust).

Python's ``tarfile`` is not used for reading: it stops silently at a corrupt header after the first
member, follows GNU/PAX extensions and is built to extract. This reader parses headers itself, checks
every checksum, padding block and the end-of-archive marker, and returns what it found plus every
problem; deciding which members are acceptable is the bundle reader's job.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass

from edgekws.packaging._errors import Problem

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_CHKSUM_FIELD = re.compile(rb"[0-7]{6}\x00 ")
_OCTAL_FIELD = re.compile(rb" *([0-7]+)[\x00 ]*|[\x00 ]*")

TYPE_NAMES = {
    b"0": "regular file",
    b"\x00": "regular file",
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"5": "directory",
    b"6": "FIFO",
    b"7": "contiguous file",
    b"x": "PAX extended header",
    b"g": "PAX global header",
    b"L": "GNU long name",
    b"K": "GNU long link name",
    b"S": "GNU sparse file",
}


@dataclass(frozen=True)
class TarMember:
    """One parsed member. ``data`` is None where the member's content was not read (over the size limit)."""

    index: int
    name: str
    typeflag: bytes
    size: int
    data: bytes | None
    linkname: str

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.typeflag, f"unknown type {self.typeflag!r}")

    @property
    def is_regular(self) -> bool:
        return self.typeflag in (b"0", b"\x00")

    @property
    def is_directory(self) -> bool:
        return self.typeflag == b"5"


def write_tar(members: list[tuple[str, bytes]], mtime: int) -> bytes:
    """A USTAR archive of regular files, in the given order, byte-identical for identical input.

    Every member gets mode 0644, uid/gid 0, empty user/group names and the same ``mtime``; the archive
    ends with the two-zero-block end marker and no further record padding.
    """
    out = bytearray()
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = mtime
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        out += info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
        out += data
        out += bytes(-len(data) % BLOCK)
    out += bytes(2 * BLOCK)
    return bytes(out)


def _octal(field: bytes) -> int | None:
    m = _OCTAL_FIELD.fullmatch(field)
    if m is None:
        return None
    return int(m.group(1), 8) if m.group(1) else 0


def _cstring(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def read_tar(
    data: bytes, *, max_member_bytes: int, max_members: int
) -> tuple[list[TarMember], list[Problem]]:
    """Parse ``data`` as a USTAR archive; returns the members read and every problem found."""
    problems: list[Problem] = []
    members: list[TarMember] = []
    if data[:2] == b"\x1f\x8b":
        return [], [
            Problem("compressed", "", "the file is gzip-compressed; a bundle is a plain tar: gunzip it")
        ]
    n = len(data)
    pos = 0
    while True:
        where = f"member #{len(members) + 1} (offset {pos})"
        if pos + BLOCK > n:
            problems.append(
                Problem("truncated", "", f"the archive ends at byte {n} without its end-of-archive marker")
            )
            break
        block = data[pos : pos + BLOCK]
        if block == _ZERO_BLOCK:
            if pos + 2 * BLOCK > n:
                problems.append(Problem("truncated", "", "the archive ends inside its end-of-archive marker"))
            elif data[pos + BLOCK : pos + 2 * BLOCK] != _ZERO_BLOCK:
                problems.append(
                    Problem("header", where, "a zero block is followed by data (corrupt archive)")
                )
            elif any(data[pos + 2 * BLOCK :]):
                problems.append(
                    Problem("trailing-data", "", f"non-zero bytes follow the end-of-archive marker at {pos}")
                )
            elif n % BLOCK:
                problems.append(Problem("trailing-data", "", f"the file size {n} is not a multiple of 512"))
            break
        chk_field = block[148:156]
        if not _CHKSUM_FIELD.fullmatch(chk_field):
            problems.append(Problem("header", where, "malformed header checksum field (corrupt archive)"))
            break
        unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if int(chk_field[:6], 8) != unsigned:
            problems.append(Problem("header", where, "header checksum mismatch (corrupt or altered archive)"))
            break
        magic = block[257:265]
        if magic not in (b"ustar\x0000", b"ustar  \x00"):
            problems.append(Problem("header", where, "not a ustar header (only ustar archives are bundles)"))
            break
        try:
            name = _cstring(block[0:100]).decode("utf-8")
            prefix = _cstring(block[345:500]).decode("utf-8") if magic == b"ustar\x0000" else ""
            linkname = _cstring(block[157:257]).decode("utf-8")
        except UnicodeDecodeError:
            problems.append(Problem("member-name", where, "member name is not UTF-8"))
            break
        if prefix:
            name = f"{prefix}/{name}"
        where = f"{name!r}" if name else where
        size = _octal(block[124:136])
        if size is None:
            problems.append(
                Problem("header", where, "malformed size field (base-256 sizes are not supported)")
            )
            break
        typeflag = block[156:157]
        start = pos + BLOCK
        end = start + size + (-size % BLOCK)
        too_big = size > max_member_bytes
        if too_big:
            problems.append(
                Problem(
                    "size-limit", where, f"member is {size} bytes, over the {max_member_bytes}-byte limit"
                )
            )
        if end > n:
            problems.append(
                Problem("truncated", where, f"member declares {size} bytes but the archive ends at byte {n}")
            )
            break
        if any(data[start + size : end]):
            problems.append(Problem("padding", where, "non-zero padding after the member's data (altered)"))
        content = None if too_big else data[start : start + size]
        members.append(TarMember(len(members), name, typeflag, size, content, linkname))
        if len(members) > max_members:
            problems.append(Problem("too-many-members", "", f"more than {max_members} members"))
            break
        pos = end
    return members, problems
