"""Tests for energy per inference and its method strings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgekws.agent._energy import (
    CpuTdpEstimate,
    EnergyMonitor,
    Ina3221Meter,
    MeterUnavailable,
    OpCounts,
    RaplMeter,
    detect_meters,
    loihi_opcount_joules,
    network_opcounts,
    opcount_reading,
    paper_calibration,
)


def _fake_rapl(root: Path, energy_uj: int, wrap: int = 1000) -> Path:
    d = root / "intel-rapl:0"
    d.mkdir(parents=True, exist_ok=True)
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{wrap}\n")
    (d / "name").write_text("package-0\n")
    sub = root / "intel-rapl:0:0"  # a sub-domain (core): must not be counted twice
    sub.mkdir(exist_ok=True)
    (sub / "energy_uj").write_text("5\n")
    return d


def test_rapl_counter_deltas_handle_wraparound(tmp_path: Path) -> None:
    """RAPL energy accumulates counter deltas in joules across a wrap of the µJ counter."""
    d = _fake_rapl(tmp_path, 900)
    meter = RaplMeter(root=str(tmp_path / "intel-rapl:*"))
    assert meter.method == "measured:rapl" and "package-0" in meter.detail
    (d / "energy_uj").write_text("950\n")
    assert meter.read() == pytest.approx(50e-6)
    (d / "energy_uj").write_text("30\n")  # wrapped at 1000
    assert meter.read() == pytest.approx(130e-6)


def test_absent_meters_say_why(tmp_path: Path) -> None:
    """On a box without RAPL or INA3221 the meters are reported absent with a reason, the estimate remains."""
    meters, absent = detect_meters(
        ina3221_root=str(tmp_path / "nope/hwmon*"), rapl_root=str(tmp_path / "intel-rapl:*"), with_nvml=False
    )
    assert "measured:rapl" in absent and "no RAPL domains" in absent["measured:rapl"]
    assert "measured:ina3221" in absent and "INA3221" in absent["measured:ina3221"]
    assert [m.method for m in meters] == ["estimated:cpu-tdp"]


def test_ina3221_integrates_rail_power(tmp_path: Path) -> None:
    """The Jetson meter multiplies mV by mA per rail and integrates power over time."""
    hw = tmp_path / "1-0040" / "hwmon" / "hwmon3"
    hw.mkdir(parents=True)
    for k, (label, mv, ma) in enumerate([("VDD_IN", 5000, 600), ("VDD_SOC", 5000, 200)], start=1):
        (hw / f"in{k}_label").write_text(label)
        (hw / f"in{k}_input").write_text(str(mv))
        (hw / f"curr{k}_input").write_text(str(ma))
    meter = Ina3221Meter(root=str(tmp_path / "*" / "hwmon" / "hwmon*"), rate_hz=200)
    assert meter.power_w() == pytest.approx(4.0) and "VDD_IN+VDD_SOC" in meter.detail
    only_soc = Ina3221Meter(rails=["VDD_SOC"], root=str(tmp_path / "*" / "hwmon" / "hwmon*"))
    assert only_soc.power_w() == pytest.approx(1.0)
    meter.start()
    time.sleep(0.3)
    meter.stop()
    assert meter.read() == pytest.approx(4.0 * 0.3, rel=0.25)
    with pytest.raises(MeterUnavailable, match="not found"):
        Ina3221Meter(rails=["VDD_GPU"], root=str(tmp_path / "*" / "hwmon" / "hwmon*"))


def test_monitor_divides_by_inferences_and_keeps_the_method() -> None:
    """Energy per inference is the meter delta over the inferences of the interval, labelled estimated."""
    mon = EnergyMonitor([CpuTdpEstimate(watts_per_core=10.0)])
    mon.start()
    t_end = time.process_time() + 0.1
    while time.process_time() < t_end:
        pass
    (reading,) = mon.report(inferences=10)
    assert reading.method == "estimated:cpu-tdp" and "not measured" in reading.detail
    assert reading.joules_per_inference is not None and 0.08 <= reading.joules_per_inference <= 0.2
    assert mon.report(inferences=0)[0].joules_per_inference is None


def test_loihi_opcount_estimate_and_paper_gap() -> None:
    """The op-count model uses Davies 2018 coefficients and lands within 3x of the paper-implied 0.43 mJ."""
    assert loihi_opcount_joules(OpCounts(1e6, 0, 0)) == pytest.approx(23.6e-6)
    ops = network_opcounts(512, 20, 1000, input_spikes=1000, hidden_spikes=2000)
    assert ops.synops == 1000 * 512 + 2000 * 532 and ops.neuron_updates == 532_000
    reading = opcount_reading(ops)
    assert reading.method == "estimated:loihi2-opcount" and "Davies" in reading.detail
    cal = paper_calibration()
    assert 0.15 < cal["estimate_mj"] < 0.3
    assert 1.0 < cal["ratio_paper_over_estimate"] < 3.0


def test_opcount_estimator_turns_emulator_work_into_energy_per_inference() -> None:
    """Each report covers the emulator's work since the last one, per inference; a new backend starts at 0."""
    import numpy as np

    from edgekws.agent._energy import OpCountEstimator
    from edgekws.agent.backends import EmulatorBackend
    from edgekws.packaging._fixedpoint import FixedPointLayer, FixedPointNetwork

    rng = np.random.default_rng(0)
    hidden = FixedPointLayer(
        weight=rng.integers(-128, 127, (16, 8)),
        weight_rec=rng.integers(-128, 127, (16, 16)),
        i_decay=1024,
        v_decay=256,
        v_th_mant=60,
        weight_scale=2.0**-8,
    )
    readout = FixedPointLayer(
        weight=rng.integers(-128, 127, (3, 16)), i_decay=512, v_decay=0, weight_scale=1.0
    )
    emulator = EmulatorBackend(FixedPointNetwork((hidden, readout)), kernel="numpy")
    estimator = OpCountEstimator()
    x = (rng.random((2, 100, 8)) < 0.3).astype(np.uint8)
    emulator.run(x)
    counts = emulator.event_counts()
    first = estimator.report(emulator, inferences=2)
    expected = opcount_reading(
        OpCounts(
            counts["synops"] / 2,
            counts["neuron_updates"] / 2,
            (counts["input_events"] + counts["hidden_spikes"]) / 2,
        )
    )
    assert first is not None and first.method == "estimated:loihi2-opcount"
    assert (
        first.joules_per_inference == pytest.approx(expected.joules_per_inference)
        and counts["hidden_spikes"] > 0
    )
    emulator.run(x)
    second = estimator.report(emulator, inferences=2)
    assert second is not None and second.joules_per_inference == pytest.approx(first.joules_per_inference)
    assert estimator.report(object(), inferences=2) is None, "a backend without op counts gives no estimate"
