"""Bundle format: container overhead, write/verify time, and an exhaustive single-bit-flip sweep.

1. **Overhead**: bytes a bundle adds over its model files (tar headers and padding, manifest.json, signature,
   end marker) for one to four model files of several sizes.
2. **Time**: write (hash + sign + tar) and open_bundle (parse + verify every hash and the signature) from
   bytes in memory, best and median of repeats, for 1 MiB and 16 MiB of model files.
3. **Every bit**: flips each bit of a small bundle one at a time and checks open_bundle refuses every one
   with InvalidBundle (the hypothesis test samples 300 of them; this sweeps them all).

Run: .venv/bin/python benchmarks/bundle.py   (writes benchmarks/results/bundle.json and bundle.md)
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from _common import RESULTS, machine, write_results

from edgekws.packaging import InvalidBundle, Lineage, Manifest, Metrics, SigningKey, bundle_bytes, open_bundle

KEY = SigningKey(bytes(range(32)))


def manifest(labels: int = 20) -> Manifest:
    names = tuple(f"class{i}" for i in range(labels))
    return Manifest(
        name="kws-digits", version="1.0.0", created="2026-05-09T07:35:25Z", producer_version="0.1.0",
        labels=names, frontend={"type": "edgekws.frontend", "format_version": 1, "dt_ms": 1.0},
        network={"type": "edgekws.network", "format_version": 1, "num_inputs": 700, "hidden": [256],
                 "recurrent": [True], "num_outputs": labels, "class_names": list(names)},
        quantization={"type": "edgekws.quantization", "format_version": 1, "weight_bits": 8},
        backends=("fixed_point_emulator", "lava_fixed_pt", "onnx_cpu"),
        metrics=Metrics({"accuracy": 0.9}, {"accuracy": 0.89}, {"onnx_cpu": {"latency_ms_p50": 0.3}}),
        lineage=Lineage("0.9.0", "run-1", "sha256:" + "0" * 64),
    )  # fmt: skip


def overhead() -> list[dict[str, Any]]:
    rows = []
    names = ["model/float.npz", "model/netx.h5", "model/model.onnx", "model/model.nir"]
    for count in (1, 4):
        for size in (1000, 250_000, 1_000_000):
            files = {n: os.urandom(size) for n in names[:count]}
            data, m = bundle_bytes(manifest(), files, KEY)
            payload = sum(len(b) for b in files.values())
            rows.append(
                {
                    "files": count,
                    "file_bytes": size,
                    "payload_bytes": payload,
                    "bundle_bytes": len(data),
                    "overhead_bytes": len(data) - payload,
                    "manifest_bytes": len(m.canonical_bytes()),
                    "overhead_percent": round(100 * (len(data) - payload) / payload, 3),
                }
            )
    return rows


def timing() -> list[dict[str, Any]]:
    rows = []
    for total in (1 << 20, 16 << 20):
        files = {"model/netx.h5": os.urandom(total // 2), "model/model.onnx": os.urandom(total // 2)}
        writes, opens = [], []
        for _ in range(7):
            t0 = time.perf_counter()
            data, _ = bundle_bytes(manifest(), files, KEY)
            t1 = time.perf_counter()
            open_bundle(data, [KEY.public_key])
            t2 = time.perf_counter()
            writes.append(t1 - t0)
            opens.append(t2 - t1)
        rows.append(
            {
                "payload_bytes": total,
                "write_ms_min": round(1e3 * min(writes), 2),
                "write_ms_median": round(1e3 * statistics.median(writes), 2),
                "open_verify_ms_min": round(1e3 * min(opens), 2),
                "open_verify_ms_median": round(1e3 * statistics.median(opens), 2),
            }
        )
    return rows


def every_bit() -> dict[str, Any]:
    data, _ = bundle_bytes(manifest(labels=2), {"model/netx.h5": os.urandom(700)}, KEY)
    trust = [KEY.public_key]
    refused, other = 0, []
    t0 = time.perf_counter()
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            open_bundle(bytes(flipped), trust)
        except InvalidBundle:
            refused += 1
        except Exception as exc:  # recorded, not hidden: any other exception type is a bug
            other.append(f"bit {bit}: {type(exc).__name__}: {exc}")
    return {
        "bundle_bytes": len(data),
        "bits": 8 * len(data),
        "refused_with_invalid_bundle": refused,
        "accepted": 8 * len(data) - refused - len(other),
        "other_exceptions": other[:10],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    result: dict[str, Any] = {
        "machine": machine(),
        "overhead": overhead(),
        "timing": timing(),
        "every_bit": every_bit(),
    }
    lines = [
        "# Bundle format benchmark",
        "",
        f"Machine: {result['machine']}. Command: `.venv/bin/python benchmarks/bundle.py`.",
        "",
        "| files | bytes each | bundle bytes | overhead bytes | manifest bytes | overhead % |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['files']} | {r['file_bytes']} | {r['bundle_bytes']} | {r['overhead_bytes']} | "
        f"{r['manifest_bytes']} | {r['overhead_percent']} |"
        for r in result["overhead"]
    ]
    lines += ["", "| payload bytes | write ms (min/median) | open+verify ms (min/median) |", "|---|---|---|"]
    lines += [
        f"| {r['payload_bytes']} | {r['write_ms_min']} / {r['write_ms_median']} | "
        f"{r['open_verify_ms_min']} / {r['open_verify_ms_median']} |"
        for r in result["timing"]
    ]
    eb = result["every_bit"]
    lines += [
        "",
        f"Every single-bit flip of a {eb['bundle_bytes']}-byte bundle: {eb['bits']} flips, "
        f"{eb['refused_with_invalid_bundle']} refused with InvalidBundle, {eb['accepted']} accepted, "
        f"{len(eb['other_exceptions'])} other exceptions ({eb['seconds']} s).",
        "",
    ]
    write_results(RESULTS / "bundle.json", result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
