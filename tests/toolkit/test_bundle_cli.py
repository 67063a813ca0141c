"""Tests for `edgekws keys …` and `edgekws bundle …` on real key files, bundles and stores."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from edgekws.packaging import (
    FixedPointLayer,
    FixedPointNetwork,
    Lineage,
    Manifest,
    Metrics,
    load_private_key,
    write_bundle,
    write_netx,
)
from edgekws.toolkit._bundle_cli import _BundleGroup
from edgekws.toolkit._cli import main

NETWORK = {
    "type": "edgekws.network", "format_version": 1, "num_inputs": 4, "hidden": [3], "recurrent": [True],
    "num_outputs": 2,
}  # fmt: skip
FRONTEND = {"type": "edgekws.frontend", "format_version": 1}


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    code, out = run("keys", "generate", "--out", tmp_path / "keys", "--name", "release")
    assert code == 0, out
    run("keys", "generate", "--out", tmp_path / "keys", "--name", "other")
    return tmp_path / "keys"


def netx_bytes(tmp: Path, seed: int = 0, hidden: int = 3) -> bytes:
    """A real NetX file of a 4 -> hidden (recurrent) -> 2 network, as the manifest's NETWORK describes."""
    rng = np.random.default_rng(seed)
    net = FixedPointNetwork(
        (
            FixedPointLayer(
                rng.integers(-9, 9, (hidden, 4)), rng.integers(-9, 9, (hidden, hidden)), 100, 100, 64
            ),
            FixedPointLayer(rng.integers(-9, 9, (2, hidden)), None, 100, 100, 64),
        )
    )
    return write_netx(net, tmp / f"netx-{seed}-{hidden}.h5").read_bytes()


def make(tmp: Path, keys: Path, version: str, accuracy: float = 0.9, payload: bytes | None = None) -> Path:
    payload = netx_bytes(tmp) if payload is None else payload
    m = Manifest(
        name="kws", version=version, created="2026-05-09T07:35:25Z", producer_version="0.1.0",
        labels=("on", "off"), frontend=FRONTEND, network=NETWORK, lineage=Lineage(),
        metrics=Metrics(float={"accuracy": accuracy}),
    )  # fmt: skip
    return write_bundle(tmp, m, {"model/netx.h5": payload}, load_private_key(keys / "release.key"))


def test_keys_generate_prints_the_key_id(tmp_path: Path) -> None:
    """`keys generate` writes NAME.key (0600) and NAME.pub and prints the key id; it never overwrites."""
    code, out = run("keys", "generate", "--out", tmp_path, "--name", "k", "--json")
    info = json.loads(out)
    assert code == 0 and re.fullmatch(r"[0-9a-f]{16}", info["key_id"])
    assert load_private_key(tmp_path / "k.key").key_id == info["key_id"]
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    code, out = run("keys", "generate", "--out", tmp_path, "--name", "k")
    assert code == 1 and "already exists" in out


def test_verify_ok_and_failure_lists_every_problem(tmp_path: Path, keys: Path) -> None:
    """`bundle verify` exits 0 for a good bundle and 1 with every problem for a bad one."""
    path = make(tmp_path, keys, "1.0.0")
    code, out = run("bundle", "verify", path, "--trust", keys / "release.pub")
    assert code == 0 and out.startswith("OK kws 1.0.0")
    code, out = run("bundle", "verify", path, "--trust", keys / "other.pub")
    assert code == 1 and "[untrusted]" in out
    data = bytearray(path.read_bytes())
    data[-1030] ^= 1  # a byte of the zero padding after the last member
    bad = tmp_path / "bad.ekb"
    bad.write_bytes(bytes(data))
    code, out = run("bundle", "verify", bad, "--trust", keys / "other.pub", "--json")
    report = json.loads(out)
    assert code == 1 and not report["verified"]
    assert {p["code"] for p in report["problems"]} == {"padding", "untrusted"}


def test_inspect_shows_manifest_and_trust_state(tmp_path: Path, keys: Path) -> None:
    """`bundle inspect` shows name, version, files and signer, and is verified only with --trust."""
    path = make(tmp_path, keys, "1.0.0")
    code, out = run("bundle", "inspect", path)
    assert code == 0 and "kws 1.0.0" in out and "NOT VERIFIED" in out and "model/netx.h5" in out
    code, out = run("bundle", "inspect", path, "--trust", keys, "--json")
    info = json.loads(out)
    assert info["verified"] and info["manifest"]["version"] == "1.0.0"
    assert [m["name"] for m in info["members"]] == ["manifest.json", "signature", "model/netx.h5"]


def test_inspect_exits_1_for_what_is_not_a_bundle(tmp_path: Path, keys: Path) -> None:
    """L8: an empty file, a gzip file and a bundle failing --trust exit 1 (they exited 0), problems listed."""
    empty, gz = tmp_path / "empty.ekb", tmp_path / "x.ekb"
    empty.write_bytes(b"")
    gz.write_bytes(gzip.compress(b"not a tar"))
    for path in (empty, gz):
        code, out = run("bundle", "inspect", path)
        assert code == 1 and "problem:" in out, out
        code, out = run("bundle", "inspect", path, "--json")
        assert code == 1 and json.loads(out)["problems"], out
    code, out = run("bundle", "inspect", make(tmp_path, keys, "1.0.0"), "--trust", keys / "other.pub")
    assert code == 1 and "INVALID" in out


def test_verify_checks_the_network_spec_against_the_model_file(tmp_path: Path, keys: Path) -> None:
    """L2: a signed bundle whose manifest says 3 hidden neurons but whose netx.h5 holds 5 fails verify with
    model-mismatch (it used to pass and crash `classify` later)."""
    path = make(tmp_path, keys, "1.0.0", payload=netx_bytes(tmp_path, hidden=5))
    code, out = run("bundle", "verify", path, "--trust", keys / "release.pub")
    assert code == 1 and "[model-mismatch] network.hidden" in out and "(5,)" in out


def test_diff_lists_changed_fields(tmp_path: Path, keys: Path) -> None:
    """`bundle diff` lists version, metric and file-hash changes; identical manifests diff empty."""
    a = make(tmp_path, keys, "1.0.0")
    b = make(tmp_path, keys, "1.1.0", accuracy=0.95, payload=netx_bytes(tmp_path, seed=2, hidden=40))
    code, out = run("bundle", "diff", a, b, "--json")
    fields = {c["field"] for c in json.loads(out)["changes"]}
    assert code == 0 and {"version", "metrics.float.accuracy"} <= fields
    assert "files['model/netx.h5'].sha256" in fields and "files['model/netx.h5'].size" in fields
    code, out = run("bundle", "diff", a, a, "--exit-code")
    assert code == 0 and "identical" in out
    code, _ = run("bundle", "diff", a, b, "--exit-code")
    assert code == 1


def test_push_list_pull_through_the_cli(tmp_path: Path, keys: Path) -> None:
    """push verifies and stores, list shows versions, pull NAME[@VERSION] copies the bytes back."""
    store = tmp_path / "store"
    v1, v2 = make(tmp_path, keys, "1.0.0"), make(tmp_path, keys, "1.1.0", payload=b"v2")
    for p in (v1, v2):
        code, out = run("bundle", "push", p, "--store", store, "--trust", keys / "release.pub")
        assert code == 0, out
    code, out = run("bundle", "push", v1, "--store", store, "--trust", keys / "other.pub")
    assert code == 1 and "untrusted" in out
    code, out = run("bundle", "list", "--store", store, "--json")
    assert [e["version"] for e in json.loads(out)] == ["1.0.0", "1.1.0"]
    dest = tmp_path / "pulled"
    dest.mkdir()
    code, out = run("bundle", "pull", "kws", "--store", store, "--out", dest, "--trust", keys / "release.pub")
    assert code == 0 and (dest / "kws-1.1.0.ekb").read_bytes() == v2.read_bytes()
    code, out = run("bundle", "pull", "kws@1.0.0", "--store", store, "--out", dest / "old.ekb")
    assert code == 0 and (dest / "old.ekb").read_bytes() == v1.read_bytes()
    code, out = run("bundle", "pull", "kws@9.0.0", "--store", store, "--out", dest)
    assert code == 1 and "no version '9.0.0'" in out
    code, out = run("bundle", "pull", "kws@1.0.0", "--store", store, "--out", f"{tmp_path}/new/")
    assert code == 0 and f"to {tmp_path}/new/kws-1.0.0.ekb" in out
    assert (tmp_path / "new/kws-1.0.0.ekb").read_bytes() == v1.read_bytes()


def test_bundle_run_routes_to_a_registered_build_command() -> None:
    """`bundle RUN …` reaches the `build` subcommand once one is registered; subcommands still win."""
    group = _BundleGroup("bundle")

    @click.command()
    @click.argument("run_dir")
    @click.option("--name")
    def build(run_dir: str, name: str) -> None:
        click.echo(f"build {run_dir} {name}")

    @click.command()
    def verify() -> None:
        click.echo("verify")

    group.add_command(build, "build")
    group.add_command(verify)
    assert CliRunner().invoke(group, ["runs/demo", "--name", "kws"]).output == "build runs/demo kws\n"
    assert CliRunner().invoke(group, ["verify"]).output == "verify\n"
