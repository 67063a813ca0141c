"""Energy per inference, always with its method (design.md §6; the coefficients are in docs/agent.md).

Meters (``measured:*``) read a cumulative energy counter, or integrate sampled power, over an
interval; the agent divides by the inferences of the interval. Every meter is detected at start and
says why when it is absent:

- ``measured:nvml``: NVIDIA driver's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ
  since driver load; Volta and newer) through ``pynvml`` (package ``nvidia-ml-py``). Whole GPU.
- ``measured:ina3221``: Jetson on-module INA3221 power monitors. Each rail ``k`` of
  ``/sys/bus/i2c/drivers/ina3221*/<bus-addr>/hwmon/hwmon*/`` has ``in{k}_input`` (mV) and ``curr{k}_input``
  (mA) (``in{k}_label`` names it, e.g. VDD_IN, VDD_CPU_GPU_CV, VDD_SOC); power = V * I, integrated over
  time by a sampling thread (default 50 Hz). Summed over the rails selected (all by default; the
  seed paper used VDD_CPU_GPU_CV + VDD_SOC on the Orin Nano).
- ``measured:rapl``: Linux powercap ``/sys/class/powercap/intel-rapl:<n>/energy_uj`` (package domains,
  µJ, wrapping at ``max_energy_range_uj``); often readable by root only since CVE-2020-8694.
  Whole CPU package(s), not just this process.

Estimates (``estimated:*``) are never labelled measured:

- ``estimated:cpu-tdp``: process CPU seconds x ``watts_per_core`` (default 5 W per busy core, an
  order-of-magnitude figure for a modern x86 or Cortex-A78 core under load; not a measurement).
- ``estimated:loihi2-opcount``: what the same inference would cost on a Loihi-class chip, from the
  operation counts: ``E = synops * 23.6 pJ + neuron_updates * 52 pJ + spikes * 1.7 pJ`` (Davies et al.
  2018, IEEE Micro 38(1), Table 2, Loihi 1 at 0.75 V, pre-silicon figures) + ``static_w * duration``
  (0 by default). For the seed paper's SHD 512 network this gives ~0.22 mJ per sample against the
  paper-implied ~0.43 mJ on Loihi 2 (85 mJ Jetson / 200): see :func:`paper_calibration`.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from edgekws.agent.backends import CountsEvents

# Davies et al. 2018, IEEE Micro 38(1):82-99, Table 2 (Loihi 1, 0.75 V);
# transcribed in reference/loihi2-lava-netx.md §6.2.
LOIHI_PJ_PER_SYNOP = 23.6
LOIHI_PJ_PER_NEURON_UPDATE = 52.0  # inactive neuron update; 81 pJ when active
LOIHI_PJ_PER_SPIKE = 1.7  # within-tile spike; each tile hop adds 3-4 pJ
LOIHI_SOURCE = "Davies et al. 2018 IEEE Micro 38(1) Table 2 (Loihi 1, 0.75 V, pre-silicon)"

# The seed paper (arXiv 2503.04341), SHD, hidden 512, batch 1, Jetson Orin Nano: 26.04 ms and 85.1 mJ
# per sample,
# 8.31 M synaptic ops per sample; Loihi 2 claimed "up to 10x faster, 200x less energy" => ~0.43 mJ per sample.
PAPER_SHD512_JETSON_MJ = 85.1
PAPER_SHD512_LOIHI2_MJ = PAPER_SHD512_JETSON_MJ / 200.0
PAPER_SHD512_SOPS = 8.31e6


class MeterUnavailable(RuntimeError):
    """A meter is absent on this machine; the message says why."""


@dataclass(frozen=True)
class EnergyReading:
    """Energy per inference and per second of audio listened to over an interval, with how it was obtained.

    An inference is one window's worth of one network instance's work (a lanes-mode window scored; for an
    always-on network one window length of audio), so per inference compares networks and per audio second
    compares what listening costs, whatever the streaming mode.
    """

    joules_per_inference: float | None
    method: str  # "measured:<meter>" or "estimated:<model>"
    detail: str = ""  # scope and coefficients
    joules_per_audio_s: float | None = None  # energy per second of audio listened to (None: no audio)

    def to_dict(self) -> dict[str, Any]:
        j, a = self.joules_per_inference, self.joules_per_audio_s
        return {
            "mj_per_inference": None if j is None else round(j * 1e3, 6),
            "mj_per_audio_s": None if a is None else round(a * 1e3, 6),
            "method": self.method,
            "detail": self.detail,
        }


class EnergyMeter:
    """A cumulative energy counter in joules; ``read()`` is monotonic between ``start()`` and ``stop()``."""

    method = "measured:?"
    detail = ""

    def start(self) -> None:
        """Begin measuring (meters that sample power start their thread here)."""

    def stop(self) -> None:
        """Stop measuring."""

    def read(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


class NvmlMeter(EnergyMeter):
    """NVIDIA GPU total-energy counter (mJ since driver load) of device ``index``."""

    method = "measured:nvml"

    def __init__(self, index: int = 0) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise MeterUnavailable("pynvml not installed (pip install nvidia-ml-py)") from exc
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            name = pynvml.nvmlDeviceGetName(self._handle)
        except Exception as exc:  # pynvml.NVMLError: no driver, no GPU, or counter unsupported (pre-Volta)
            raise MeterUnavailable(f"NVML energy counter not available ({exc})") from exc
        self._nvml = pynvml
        self.detail = f"GPU {index} ({name!s}) total energy counter, whole board"

    def read(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)) / 1e3


INA3221_GLOB = "/sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*"


class Ina3221Meter(EnergyMeter):
    """Jetson INA3221 rails: power sampled by a thread and integrated (trapezoids) into joules."""

    method = "measured:ina3221"

    def __init__(
        self, rails: list[str] | None = None, rate_hz: float = 50.0, root: str = INA3221_GLOB
    ) -> None:
        self._channels: list[tuple[str, str, str]] = []  # (label, volts file, amps file)
        for hw in sorted(glob.glob(root)):
            for volt in sorted(glob.glob(os.path.join(hw, "in*_input"))):
                k = os.path.basename(volt)[2:].split("_")[0]
                curr = os.path.join(hw, f"curr{k}_input")
                if not os.path.exists(curr):
                    continue
                label_file = os.path.join(hw, f"in{k}_label")
                label = (
                    _read_text(label_file) if os.path.exists(label_file) else f"{os.path.basename(hw)}.in{k}"
                )
                if rails is None or label in rails:
                    self._channels.append((label, volt, curr))
        if not self._channels:
            raise MeterUnavailable(
                f"no INA3221 rails under {root} (not a Jetson, or rails {rails} not found)"
            )
        try:
            self.power_w()
        except OSError as exc:
            raise MeterUnavailable(f"INA3221 rails not readable ({exc})") from exc
        self.period = 1.0 / rate_hz
        self.detail = (
            "INA3221 rails " + "+".join(c[0] for c in self._channels) + f", sampled at {rate_hz:g} Hz"
        )
        self._joules = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def power_w(self) -> float:
        """Instantaneous power summed over the selected rails (mV * mA = µW)."""
        return sum(float(_read_text(v)) * float(_read_text(c)) for _, v, c in self._channels) * 1e-6

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ina3221", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t_prev, p_prev = time.monotonic(), self.power_w()
        while not self._stop.wait(self.period):
            t, p = time.monotonic(), self.power_w()
            with self._lock:
                self._joules += 0.5 * (p + p_prev) * (t - t_prev)
            t_prev, p_prev = t, p

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def read(self) -> float:
        with self._lock:
            return self._joules


RAPL_GLOB = "/sys/class/powercap/intel-rapl:*"


class RaplMeter(EnergyMeter):
    """CPU package energy from Linux powercap RAPL (all package domains summed, wrap-around handled)."""

    method = "measured:rapl"

    def __init__(self, root: str = RAPL_GLOB) -> None:
        domains = [d for d in sorted(glob.glob(root)) if os.path.basename(d).count(":") == 1]
        if not domains:
            raise MeterUnavailable(
                f"no RAPL domains under {root} (not an Intel/AMD CPU with powercap, or a VM)"
            )
        self._domains: list[tuple[str, float]] = []
        problems = []
        for d in domains:
            try:
                _read_text(os.path.join(d, "energy_uj"))
                wrap = float(_read_text(os.path.join(d, "max_energy_range_uj")))
            except OSError as exc:
                problems.append(f"{d}/energy_uj: {exc.strerror}")
                continue
            self._domains.append((d, wrap))
        if not self._domains:
            raise MeterUnavailable(
                "RAPL counters not readable (" + "; ".join(problems) + "); run as root or "
                "grant read access to energy_uj"
            )
        self.detail = (
            "RAPL "
            + "+".join(_read_text(os.path.join(d, "name")) for d, _ in self._domains)
            + " (whole package)"
        )
        self._last = [self._raw(d) for d, _ in self._domains]
        self._total = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def _raw(domain: str) -> float:
        return float(_read_text(os.path.join(domain, "energy_uj")))

    def read(self) -> float:
        with self._lock:
            for i, (d, wrap) in enumerate(self._domains):
                now = self._raw(d)
                delta = now - self._last[i]
                self._total += (delta if delta >= 0 else delta + wrap) * 1e-6
                self._last[i] = now
            return self._total


class CpuTdpEstimate(EnergyMeter):
    """``estimated:cpu-tdp``: this process's CPU seconds times a per-core power coefficient."""

    method = "estimated:cpu-tdp"

    def __init__(self, watts_per_core: float = 5.0) -> None:
        self.watts_per_core = watts_per_core
        self.detail = (
            f"process CPU seconds x {watts_per_core:g} W per busy core (assumed coefficient, not measured)"
        )

    def read(self) -> float:
        t = os.times()
        return (t.user + t.system) * self.watts_per_core


@dataclass(frozen=True)
class OpCounts:
    """Operations of one inference on a neuromorphic chip."""

    synops: float  # synaptic events: each spike times its fan-out
    neuron_updates: float  # neuron-steps (every neuron is updated every step)
    spikes: float  # spikes sent (input and hidden)


def loihi_opcount_joules(ops: OpCounts, duration_s: float = 0.0, static_w: float = 0.0) -> float:
    """Energy of ``ops`` with the Davies 2018 Table 2 coefficients, plus ``static_w`` over ``duration_s``."""
    dynamic = (
        ops.synops * LOIHI_PJ_PER_SYNOP
        + ops.neuron_updates * LOIHI_PJ_PER_NEURON_UPDATE
        + ops.spikes * LOIHI_PJ_PER_SPIKE
    ) * 1e-12
    return dynamic + static_w * duration_s


def network_opcounts(
    hidden: int,
    outputs: int,
    steps: int,
    input_spikes: float,
    hidden_spikes: float,
    recurrent: bool = True,
) -> OpCounts:
    """Op counts of the reference topology (inputs -> recurrent hidden -> readout) for one inference."""
    fan_out_hidden = hidden * int(recurrent) + outputs
    return OpCounts(
        synops=input_spikes * hidden + hidden_spikes * fan_out_hidden,
        neuron_updates=steps * (hidden + outputs),
        spikes=input_spikes + hidden_spikes,
    )


def opcount_reading(
    ops: OpCounts, duration_s: float = 0.0, static_w: float = 0.0, per_audio_s: OpCounts | None = None
) -> EnergyReading:
    """An ``estimated:loihi2-opcount`` reading for one inference with these op counts (and, given the op
    counts of one second of audio, per audio second)."""
    return EnergyReading(
        loihi_opcount_joules(ops, duration_s, static_w),
        "estimated:loihi2-opcount",
        f"{LOIHI_PJ_PER_SYNOP} pJ/synop + {LOIHI_PJ_PER_NEURON_UPDATE} pJ/neuron update"
        f" + {LOIHI_PJ_PER_SPIKE} pJ/spike + {static_w:g} W static; {LOIHI_SOURCE}",
        None if per_audio_s is None else loihi_opcount_joules(per_audio_s, 1.0, static_w),
    )


def opcounts_of(delta: dict[str, float], per: float) -> OpCounts:
    """The op counts of ``event_counts()`` deltas (:class:`CountsEvents`) divided by ``per``."""
    return OpCounts(
        synops=delta["synops"] / per,
        neuron_updates=delta["neuron_updates"] / per,
        spikes=(delta["input_events"] + delta["hidden_spikes"]) / per,
    )


class OpCountEstimator:
    """``estimated:loihi2-opcount`` per inference and per audio second from a backend's running op counts
    (the emulator's :meth:`~edgekws.agent.backends.EmulatorBackend.event_counts`): what the same work would
    cost on a Loihi-class chip. Each :meth:`report` covers the work since the previous one (and leaves it in
    :attr:`work_per_audio_s`); a new backend object starts from its own zero."""

    def __init__(self) -> None:
        self._backend: Any = None
        self._last: dict[str, float] = {}
        self.work_per_audio_s: dict[str, float] | None = None  # synops, neuron_updates, spikes

    def report(self, backend: object, inferences: int, audio_s: float = 0.0) -> EnergyReading | None:
        """The reading for ``backend``'s work since the last report, or None if it counts no ops (it is not
        :class:`~edgekws.agent.backends.CountsEvents`)."""
        self.work_per_audio_s = None
        if not isinstance(backend, CountsEvents):
            return None
        now = dict(backend.event_counts())
        if backend is not self._backend:
            self._backend, self._last = backend, {}
        delta = {k: v - self._last.get(k, 0.0) for k, v in now.items()}
        self._last = now
        per_second = opcounts_of(delta, audio_s) if audio_s > 0 else None
        if per_second is not None:
            self.work_per_audio_s = {
                "synops": round(per_second.synops, 1),
                "neuron_updates": round(per_second.neuron_updates, 1),
                "spikes": round(per_second.spikes, 1),
            }
        if not inferences:
            reading = opcount_reading(OpCounts(0, 0, 0), per_audio_s=per_second)
            per_s = reading.joules_per_audio_s
            return EnergyReading(None, reading.method, "no inferences in the interval", per_s)
        return opcount_reading(opcounts_of(delta, inferences), per_audio_s=per_second)


def paper_calibration() -> dict[str, float]:
    """The op-count estimate for the seed paper's SHD 512 network against the paper-implied Loihi 2 energy.

    Synops from the paper's own count (8.31 M per sample); neuron updates 1000 steps x (512 + 20).
    """
    ops = OpCounts(synops=PAPER_SHD512_SOPS, neuron_updates=1000 * (512 + 20), spikes=PAPER_SHD512_SOPS / 532)
    est_mj = loihi_opcount_joules(ops) * 1e3
    return {
        "estimate_mj": est_mj,
        "paper_implied_loihi2_mj": PAPER_SHD512_LOIHI2_MJ,
        "paper_jetson_mj": PAPER_SHD512_JETSON_MJ,
        "ratio_paper_over_estimate": PAPER_SHD512_LOIHI2_MJ / est_mj,
    }


def detect_meters(
    *, ina3221_root: str = INA3221_GLOB, rapl_root: str = RAPL_GLOB, with_nvml: bool = True
) -> tuple[list[EnergyMeter], dict[str, str]]:
    """The meters present here (measured first, then the CPU estimate) and why each absent one is absent."""
    found: list[EnergyMeter] = []
    absent: dict[str, str] = {}
    makers: list[tuple[str, Any]] = []
    if with_nvml:
        makers.append(("measured:nvml", NvmlMeter))
    makers += [
        ("measured:ina3221", lambda: Ina3221Meter(root=ina3221_root)),
        ("measured:rapl", lambda: RaplMeter(root=rapl_root)),
    ]
    for method, make in makers:
        try:
            found.append(make())
        except MeterUnavailable as exc:
            absent[method] = str(exc)
    found.append(CpuTdpEstimate())
    return found, absent


class EnergyMonitor:
    """Reads every meter at each report and turns the deltas into energy per inference."""

    def __init__(self, meters: list[EnergyMeter]) -> None:
        self.meters = meters
        self._last: list[float] = []

    def start(self) -> None:
        for m in self.meters:
            m.start()
        self._last = [m.read() for m in self.meters]

    def stop(self) -> None:
        for m in reversed(self.meters):
            m.stop()

    def report(self, inferences: int, audio_s: float = 0.0) -> list[EnergyReading]:
        """Energy per inference and per audio second since the last report, one reading per meter (None
        without inferences, or without audio)."""
        out = []
        for i, m in enumerate(self.meters):
            now = m.read()
            delta, self._last[i] = now - self._last[i], now
            out.append(
                EnergyReading(
                    delta / inferences if inferences else None,
                    m.method,
                    m.detail,
                    delta / audio_s if audio_s > 0 else None,
                )
            )
        return out


def _read_text(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read().strip()
