"""The demo's live stage: real mosquitto, fleet monitor and an `edgekws-agent run` process on a stream."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from edgekws.toolkit._demo_live import DEVICE_ID, _read_log, run_live_stage
from edgekws.toolkit.data import synthesize
from edgekws.toolkit.fleet._broker import free_port

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLE, TRUST = ASSETS / "digits-reference.ekb", ASSETS / "digits-test-key.pub"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live") / "corpus"
    synthesize(out, "en-digits", per_class=5, seed=1, workers=1, classes=["three", "eight"])
    return out


def test_live_stage_reports_every_detection_to_the_monitor(corpus: Path, tmp_path: Path) -> None:
    """The agent streams in real time; the monitor stores each detection it logged, plus telemetry."""
    result = run_live_stage(
        tmp_path, corpus, BUNDLE, TRUST, seed=0, minutes=0.2, mode="sliding", compare=[(BUNDLE, "lanes")]
    )
    s = result.summary
    live = tmp_path / "live"
    logged = [r for r in _read_log(live / "agent" / "agent.log") if r.get("event") == "detection"]
    assert s["agent"]["detections_logged"] == len(logged)
    assert s["monitor"]["received"]["detection"] == len(logged) and s["monitor"]["all_detections_received"]
    assert s["monitor"]["received"]["telemetry"] >= 3, "a report every 2 s over 12 s of audio"
    device = s["monitor"]["device"]
    assert device["backend"] == "emulator" and device["bundle_version"] == "4.0.0"
    assert device["energy_mj"] > 0 and device["energy_method"].startswith(("estimated:", "measured:"))
    assert device["online"] is False, "the agent said offline when the stream ended"
    energy = s["agent"]["energy_mj_per_inference"]
    assert energy["estimated:loihi2-opcount"] > 0, "the emulator's op counts give a Loihi estimate"
    score = json.loads((live / "score.json").read_text())
    assert score["keywords"] == s["stream"]["keywords"] > 0
    assert score["hits"] + score["misses"] == score["keywords"]
    assert {d["label"] for d in score["detections"]} <= {d["label"] for d in logged}
    assert result.plots["stream timeline"] is not None and result.plots["stream timeline"].exists()
    # the agent served the clip bundle on one never-reset network; the same bundle offline in 20 lanes
    assert s["agent"]["detection_mode"] == "sliding"
    (lanes,) = s["compare"]
    assert lanes["mode"] == "lanes" and lanes["score"]["keywords"] == score["keywords"]
    work = [lanes["work_per_audio_s"]["neuron_updates"], s["agent"]["work_per_audio_s"]["neuron_updates"]]
    assert 0 < work[1] < work[0] / 10, work
    assert (live / "score_compare_lanes.json").exists()
    devices = json.loads((live / "fleet" / "devices.json").read_text())
    assert [d["device"] for d in devices["devices"]] == [DEVICE_ID]
    assert (live / "broker" / "mosquitto.log").exists() and (live / "fleet" / "fleet.db").exists()


def test_live_stage_with_a_dead_broker_says_so(corpus: Path, tmp_path: Path) -> None:
    """--broker pointing at nothing stops the stage with an error naming the broker; no agent starts."""
    url = f"mqtt://127.0.0.1:{free_port()}"
    with pytest.raises(click.ClickException, match="could not connect to " + url):
        run_live_stage(
            tmp_path, corpus, BUNDLE, TRUST, seed=0, broker_url=url, minutes=0.1, connect_timeout_s=2
        )
    assert not (tmp_path / "live" / "agent" / "agent.log").exists()


def test_a_rerun_of_the_demo_signs_with_the_same_key_and_a_mismatched_pair_is_refused(tmp_path: Path) -> None:
    """`make demo` twice into one run folder: the second run finds the first run's demo key and signs with it
    (it used to stop at stage 4 because the key files existed); a demo.pub that is not demo.key's public half
    or a lone half is refused with what to do."""
    from edgekws.packaging import KeyFileError, write_keypair
    from edgekws.toolkit._demo import demo_key

    keys = tmp_path / "keys"
    first = demo_key(keys)
    assert demo_key(keys).key_id == first.key_id
    write_keypair(tmp_path / "other", "demo")
    (keys / "demo.pub").write_bytes((tmp_path / "other" / "demo.pub").read_bytes())
    with pytest.raises(KeyFileError, match="not the public half"):
        demo_key(keys)
    (keys / "demo.pub").unlink()
    with pytest.raises(KeyFileError, match=r"holds only one of demo\.key and demo\.pub"):
        demo_key(keys)
