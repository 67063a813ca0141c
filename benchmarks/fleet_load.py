"""Fleet monitors under load: 1, 2 and 4 `edgekws fleet serve --shared` processes on one mosquitto and one
PostgreSQL, a simulated fleet of paho clients publishing telemetry, and a monitor SIGKILLed mid-run.

Starts mosquitto (persistence off, LocalBroker) and a throwaway PostgreSQL (Debian's server programs,
LocalPostgres, ``track_commit_timestamp`` on so every row's commit time is known) on 127.0.0.1, then for each
configuration a fresh database, the monitors (real processes: commit, then PUBACK and cmd/ack per device;
MQTT 5 shared subscription ``$share/bench-CONFIG/edgekws/v1/+/+/#``) and ``--procs`` publisher processes
sharing ``--devices`` simulated devices (one MQTT 5 client each, QoS 1, schema-valid telemetry with unique
ids) at an offered rate for ``--seconds``.

Two kinds of run per monitor count: **saturated** (``--rate``, more than the monitors take: the broker queues
the rest, and the ingest rate is what the monitors sustain without losing anything) and **steady**
(``--steady-rate``, a load one monitor keeps up with: the lag from publish to commit is latency, not backlog).
The saturated runs are repeated (``--repeat``, 2), interleaved (1, 2, 4, 1, 2, 4 monitors), as the machine's
other work drifts; the scaling uses their median. Each run reports what was sent (PUBACKed by the broker),
what the store holds, lost (sent - stored), duplicate rows, the re-deliveries the monitors counted as
duplicates, the ingest rate (rows / first-to-last commit), the lag from each message's publish (its ``ts``) to
the commit of its row (p50, p95, max; from PostgreSQL's commit timestamps), and the CPU each process used
during the run (each monitor, the broker, PostgreSQL's processes, the publishers, and everything else on the
machine from /proc/stat): where the bottleneck is. A baseline runs one monitor on SQLite (the single-process
default; no commit timestamps); the kill run SIGKILLs one of two monitors halfway through a saturated run, and
the other adopts its broker session after ``--adopt-after``. At the end of each run the monitors get SIGTERM
and must leave their group cleanly (session drained and ended). Everything shares this machine's cores; the
simulated devices have no on-disk outbox. PostgreSQL runs with fsync off (LocalPostgres), as a test database
does.

    .venv/bin/python benchmarks/fleet_load.py        # sqlite 1; postgres 1, 2, 4 saturated and steady; kill
    .venv/bin/python benchmarks/fleet_load.py --monitors 1 2 --rate 3000 --seconds 5 --no-steady
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import RESULTS, command_line, machine, write_results

from edgekws.toolkit.fleet._broker import find_mosquitto

HERE = Path(__file__).resolve().parent
EDGEKWS = str(Path(sys.executable).with_name("edgekws"))
TICK = os.sysconf("SC_CLK_TCK")


def publisher(port: int, first: int, count: int, rate: float, seconds: float) -> None:
    """One publisher process: ``count`` devices, ``rate`` messages/s in total, for ``seconds``."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    clients = []
    for i in range(first, first + count):
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sim-{i}", protocol=MQTTProtocolVersion.MQTTv5
        )
        c.max_inflight_messages_set(20)
        c.max_queued_messages_set(0)
        c.connect("127.0.0.1", port)
        c.loop_start()
        clients.append((f"d{i:04d}", c))
    time.sleep(0.5)
    sent, infos, seq = 0, [], 0
    start = time.monotonic()
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            name, c = clients[sent % len(clients)]
            seq += 1
            body = {
                "schema": "edgekws.telemetry/1",
                "id": f"{name}.{os.getpid()}:{seq}",
                "seq": seq,
                "ts": time.time(),
                "boot": "sim",
                "interval_s": 10.0,
                "bundle": {"name": "digits", "version": "1.0.0"},
                "backend": "emulator",
                "latency_ms": {"inference": {"p50": 0.4, "p90": 0.5, "p99": 0.9, "max": 1.2, "n": 100}},
                "real_time_factor": 0.05,
                "audio_s": 10.0,
                "inferences": 100,
                "detections": 0,
                "energy": [{"mj_per_inference": 0.2, "method": "estimated:loihi2-opcount", "detail": ""}],
                "cpu_percent": 5.0,
                "rss_mb": 40.0,
                "temperature_c": None,
                "queue": {"depth": 0, "bytes": 0},
                "dropped": {},
            }
            infos.append(c.publish(f"edgekws/v1/sim/{name}/telemetry", json.dumps(body), qos=1))
            sent += 1
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 60
    for info in infos:
        info.wait_for_publish(max(0.0, deadline - time.monotonic()))
    acked = sum(1 for i in infos if i.is_published())
    for _, c in clients:
        c.disconnect()
        c.loop_stop()
    print(json.dumps({"sent": sent, "acked": acked, "publish_s": elapsed}), flush=True)


# ---- CPU accounting from /proc ----------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_s() -> float:
    """CPU seconds the machine spent busy (all cores, every process: /proc/stat less idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


class CpuMeter:
    """CPU seconds used by groups of processes (and by the whole machine) between :meth:`start` and
    :meth:`stop`; a process is counted up to the last sample it was seen alive in."""

    def __init__(self, groups: dict[str, Any]) -> None:
        self.groups = groups  # name -> callable returning the pids now
        self.seen: dict[str, dict[int, float]] = {name: {} for name in groups}

    def sample(self) -> None:
        for name, pids in self.groups.items():
            for pid in pids():
                used = cpu_s(pid)
                if used > 0:
                    self.seen[name][pid] = used
        self.last_t, self.last_busy = time.monotonic(), machine_busy_s()

    def start(self) -> None:
        self.sample()
        self.first = {name: dict(pids) for name, pids in self.seen.items()}
        self.first_t, self.first_busy = self.last_t, self.last_busy

    def stop(self) -> dict[str, Any]:
        """CPU seconds per group, the machine's busy seconds, others' (machine - ours) and the wall time."""
        self.sample()
        used = {
            name: round(sum(v - self.first[name].get(pid, 0.0) for pid, v in pids.items()), 2)
            for name, pids in self.seen.items()
        }
        wall = self.last_t - self.first_t
        busy = self.last_busy - self.first_busy
        return {
            "wall_s": round(wall, 2),
            "cpu_s": used,
            "machine_busy_s": round(busy, 2),
            "others_s": round(busy - sum(used.values()), 2),
        }


# ---- one configuration ------------------------------------------------------------------------------
def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fleet serve exited:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                if json.loads(r.read())["broker"] == "connected":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"fleet serve did not connect:\n{log.read_text()[-2000:]}")


def adoption_logged(tmp: Path, label: str) -> bool:
    return any("from the session of" in p.read_text() for p in tmp.glob(f"{label}-mon*.log"))


def percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(values, q)), 3) if values else None


def commit_times(store: Any) -> list[tuple[float, float]]:
    """(publish ts, commit time) of every telemetry row, from PostgreSQL's commit timestamps."""
    import sqlalchemy as sa

    query = sa.text("SELECT ts, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM telemetry")
    with store.engine.connect() as conn:
        return [(float(ts), float(c)) for ts, c in conn.execute(query) if c is not None]


@dataclass(frozen=True)
class Config:
    monitors: int
    store: str  # "postgresql" or "sqlite"
    kind: str  # "saturated", "steady" or "kill"
    round: int = 0  # saturated runs are repeated, interleaved: 1, 2, 4, 1, 2, 4 monitors

    @property
    def label(self) -> str:
        return f"{self.store}-{self.monitors}-{self.kind}" + (f"-r{self.round + 1}" if self.round else "")


def run_config(args: argparse.Namespace, tmp: Path, broker: Any, pg: Any, config: Config) -> dict[str, Any]:
    db = pg.new_database() if config.store == "postgresql" else f"sqlite:///{tmp / (config.label + '.db')}"
    procs: list[subprocess.Popen[bytes]] = []
    publishers: list[subprocess.Popen[str]] = []
    try:
        return measure(args, tmp, broker, pg, config, db, procs, publishers)
    finally:  # never leave a monitor or a publisher running
        everything: list[subprocess.Popen[Any]] = [*procs, *publishers]
        for p in everything:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def measure(
    args: argparse.Namespace,
    tmp: Path,
    broker: Any,
    pg: Any,
    config: Config,
    db: str,
    procs: list[subprocess.Popen[bytes]],
    publishers: list[subprocess.Popen[str]],
) -> dict[str, Any]:
    from edgekws.toolkit.fleet import FleetStore
    from edgekws.toolkit.fleet._broker import free_port

    label, kill = config.label, config.kind == "kill"
    rate = args.steady_rate if config.kind == "steady" else args.rate
    for i in range(config.monitors):
        port, log = free_port(), tmp / f"{label}-mon{i}.log"
        command = [EDGEKWS, "fleet", "serve", "--broker", broker.url, "--db", db, "--port", str(port)]
        if config.store == "postgresql":
            # a group per configuration: a run's numbers are its own monitors' (a monitor that did not leave
            # its group cleanly is reported below, not carried into the next run)
            command += ["--shared", f"bench-{label}", "--client-id", f"{label}-mon{i}"]
            command += ["--adopt-after", str(args.adopt_after)]
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
        wait_healthy(port, procs[-1], log)
    postmaster = int((Path(pg.folder) / "data" / "postmaster.pid").read_text().split()[0])
    meter = CpuMeter(
        {
            **{f"monitor{i}": (lambda p=p: [p.pid]) for i, p in enumerate(procs)},
            "broker": lambda: [broker.proc.pid],
            "postgresql": lambda: [postmaster, *children(postmaster)],
            "publishers": lambda: [p.pid for p in publishers],
        }
    )
    store = FleetStore(db)
    per = args.devices // args.procs
    load_start = os.getloadavg()[0]
    meter.start()
    t0 = time.monotonic()
    publishers += [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--publisher",
                str(broker.port),
                str(i * per),
                str(per),
                str(rate / args.procs),
                str(args.seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(args.procs)
    ]
    first_t = last_t = None
    count = last_count = 0
    killed_at = None
    while any(p.poll() is None for p in publishers):
        if kill and killed_at is None and time.monotonic() - t0 > 0.5 + args.seconds / 2:
            # mid-batch: what it took and did not commit stays in its session at the broker
            procs[0].send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
        meter.sample()  # publishers are sampled while they live
        count = store.count("telemetry")
        if count != last_count:
            first_t = first_t or time.monotonic()
            last_t, last_count = time.monotonic(), count
        time.sleep(0.1)
    publish_end = time.monotonic()
    results = [json.loads(p.stdout.read().strip().splitlines()[-1]) for p in publishers if p.stdout]
    sent = sum(r["acked"] for r in results)
    patience = 30.0 + (args.adopt_after + 30.0 if kill else 0.0)
    while count < sent and time.monotonic() - (last_t or publish_end) < patience:
        meter.sample()
        time.sleep(0.1)
        count = store.count("telemetry")
        if count != last_count:
            last_t, last_count = time.monotonic(), count
    deadline = time.monotonic() + args.adopt_after + 60.0
    while kill and time.monotonic() < deadline and not adoption_logged(tmp, label):
        time.sleep(0.2)  # the survivor adopts the dead monitor's session (even when nothing was left in it)
    cpu = meter.stop()
    load_end = os.getloadavg()[0]
    distinct = store.distinct_messages("telemetry")
    redeliveries = sum(int(s.get("duplicates") or 0) for s in store.device_states())
    times = commit_times(store) if config.store == "postgresql" else []
    store.dispose()
    for p in procs:
        if p.poll() is None:
            p.terminate()
    exits = [p.wait(60) for p in procs]
    logs = {p.name: p.read_text() for p in sorted(tmp.glob(f"{label}-mon*.log"))}
    lines = [line for text in logs.values() for line in text.splitlines()]
    adopted = [line for line in lines if "from the session of" in line]
    left = sum("left the group" in text for text in logs.values())
    if times:
        commits = sorted(c for _, c in times)
        span = commits[-1] - commits[0]
        lags = [c - ts for ts, c in times]
    else:
        span = (last_t - first_t) if first_t and last_t else float("nan")
        lags = []
    return {
        "config": label,
        "store": config.store,
        "monitors": config.monitors,
        "kind": config.kind,
        "round": config.round + 1,
        "offered_msgs_per_s": rate,
        "devices": args.devices,
        "seconds": args.seconds,
        "sent": sent,
        "stored": count,
        "lost": sent - distinct,
        "duplicate_rows": count - distinct,
        "redeliveries_counted": redeliveries,
        "publish_s": round(max(r["publish_s"] for r in results), 3),
        "ingest_msgs_per_s": round((count - 1) / span, 1) if span == span and span > 0 else None,
        "lag_s": {"p50": percentile(lags, 50), "p95": percentile(lags, 95), "max": percentile(lags, 100)},
        "drain_after_publish_s": round(max(0.0, (last_t or publish_end) - publish_end), 2),
        "killed_after_s": round(killed_at - t0, 2) if killed_at else None,
        "adoption": adopted[0].split(" WARNING ")[-1] if adopted else None,
        "clean_stops": {
            "sigterm": len(exits) - (1 if kill else 0),
            "exit_0": exits.count(0),
            "left_group": left,
        },
        "cpu": cpu,
        "load_1min": {"start": round(load_start, 2), "end": round(load_end, 2)},
    }


# ---- the report -------------------------------------------------------------------------------------
def cpu_share(step: dict[str, Any]) -> dict[str, float]:
    """Per part, CPU seconds per wall second of the run (1.0 = one core busy all the time)."""
    cpu, wall = step["cpu"], step["cpu"]["wall_s"]
    monitors = [v for k, v in cpu["cpu_s"].items() if k.startswith("monitor")]
    return {
        "monitors": round(sum(monitors) / wall, 2),
        "busiest_monitor": round(max(monitors) / wall, 2),
        "broker": round(cpu["cpu_s"]["broker"] / wall, 2),
        "postgresql": round(cpu["cpu_s"]["postgresql"] / wall, 2),
        "publishers": round(cpu["cpu_s"]["publishers"] / wall, 2),
        "others": round(cpu["others_s"] / wall, 2),
        "machine": round(cpu["machine_busy_s"] / wall, 2),
    }


def median_rates(steps: list[dict[str, Any]]) -> dict[int, float]:
    """Monitors -> the median ingest rate of the saturated PostgreSQL runs with that many."""
    import statistics

    by: dict[int, list[float]] = {}
    for s in steps:
        if s["store"] == "postgresql" and s["kind"] == "saturated" and s["ingest_msgs_per_s"]:
            by.setdefault(s["monitors"], []).append(s["ingest_msgs_per_s"])
    return {m: statistics.median(v) for m, v in by.items()}


def cpu_ms_per_message(step: dict[str, Any]) -> dict[str, float]:
    """CPU milliseconds per stored message of the monitors, the broker, PostgreSQL and the publishers."""
    cpu, n = step["cpu"]["cpu_s"], max(1, step["stored"])
    monitors = sum(v for k, v in cpu.items() if k.startswith("monitor"))
    parts = {"monitors": monitors, **{k: cpu[k] for k in ("broker", "postgresql", "publishers")}}
    return {k: 1e3 * v / n for k, v in parts.items()}


def plot(steps: list[dict[str, Any]], path: Path, cores: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [s for s in steps if s["store"] == "postgresql" and s["kind"] == "saturated"]
    rates = median_rates(steps)
    if not runs or not rates:
        return
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    ms = sorted(rates)
    ax.plot([s["monitors"] for s in runs], [s["ingest_msgs_per_s"] for s in runs], ".", color="grey",
            label="each run")  # fmt: skip
    ax.plot(ms, [rates[m] for m in ms], "o-", label="median (lossless)")
    one = rates.get(1)
    if one:
        ax.plot(ms, [one * m for m in ms], ":", color="grey", label="linear from 1 monitor")
        ax.plot([2], [1.7 * one], "x", color="red", label="target: 2 monitors ≥ 1.7×")
    ax.set_xlabel("monitors (fleet serve --shared)")
    ax.set_ylabel("ingest msg/s")
    ax.set_xticks(ms)
    ax.set_title("ingest rate, saturated runs")
    ax.legend(fontsize=8)
    parts = ["monitors", "broker", "postgresql", "publishers", "others"]
    bottom = [0.0] * len(runs)
    names = [f"{s['monitors']} (run {s['round']})" for s in runs]
    for part in parts:
        values = [cpu_share(s)[part] for s in runs]
        bx.bar(names, values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    bx.tick_params(axis="x", labelrotation=45, labelsize=7)
    bx.axhline(cores, color="black", lw=0.8, ls="--", label=f"{cores} cores")
    bx.set_xlabel("monitors")
    bx.set_ylabel("CPU cores busy (CPU s / wall s)")
    bx.set_title("where the CPU went")
    bx.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    steps = result["steps"]
    m = result["machine"]

    def lag(s: dict[str, Any]) -> str:
        lag_s = s["lag_s"]
        return (
            "–" if lag_s["p50"] is None else f"{lag_s['p50']:.2f} / {lag_s['p95']:.2f} / {lag_s['max']:.2f}"
        )

    def shares(s: dict[str, Any]) -> str:
        c = cpu_share(s)
        return (
            f"{c['monitors']:.2f} (max {c['busiest_monitor']:.2f}) / {c['broker']:.2f} "
            f"/ {c['postgresql']:.2f} / {c['publishers']:.2f} / {c['others']:.2f} = {c['machine']:.2f}"
        )

    rates = median_rates(steps)
    scaling = ""
    if rates.get(1):
        scaling = (
            "Median lossless ingest rate of the saturated runs: "
            + ", ".join(f"{k} monitor(s) {v:.0f} msg/s" for k, v in sorted(rates.items()))
            + "; over one monitor: "
            + ", ".join(f"{k} monitors {v / rates[1]:.2f}×" for k, v in sorted(rates.items()) if k > 1)
            + " (target: 2 monitors ≥ 1.7×)."
        )
    kills = [s for s in steps if s["kind"] == "kill"]
    lines = [
        "# fleet_shared: monitors sharing the ingest (MQTT 5 shared subscription, one PostgreSQL)",
        "",
        f"`{result['command']}` on {m['cpu']} ({m['cores']} cores, shared with other work: load average "
        f"{result['load_1min']['start']} at the start, {result['load_1min']['end']} at the end), "
        f"{result['broker']}, {result['postgresql']} (fsync off), Python {m['python']}; every process "
        "(publishers, broker, database, monitors) on these cores, at normal priority.",
        "",
        "| run | offered msg/s | sent | stored | lost | dup rows | re-deliveries | ingest msg/s "
        "| lag s p50 / p95 / max | CPU cores: monitors (busiest) / broker / postgres / publishers / others "
        "= machine | load 1 min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {s['config']} | {s['offered_msgs_per_s']:.0f} | {s['sent']} | {s['stored']} | {s['lost']} "
            f"| {s['duplicate_rows']} | {s['redeliveries_counted']} | {s['ingest_msgs_per_s']} | {lag(s)} "
            f"| {shares(s)} | {s['load_1min']['start']}–{s['load_1min']['end']} |"
            for s in steps
        ],
        "",
        scaling,
        "",
        f"Offered load from {args.devices} simulated devices ({args.procs} publisher processes) for "
        f"{args.seconds:g} s: saturated runs at {args.rate:.0f} msg/s (more than the monitors take: the "
        f"broker queues the rest), steady runs at {args.steady_rate:.0f} msg/s. Ingest rate = rows / time "
        "from the first to the last commit (PostgreSQL's commit timestamps; SQLite: first to last row seen "
        "by "
        "polling); lag = a row's commit time - its publish time (in saturated runs mostly the broker's "
        "queue, in steady runs latency); lost = PUBACKed by the broker and not in the store; re-deliveries = "
        "messages the monitors received again and counted as duplicates (stored once). CPU cores = CPU "
        "seconds / wall seconds of the run from /proc (each monitor process, mosquitto, every PostgreSQL "
        "process, the publishers; others = the machine's busy time from /proc/stat minus ours, i.e. other "
        "people's jobs). Every monitor is stopped with SIGTERM after its run: "
        + ", ".join(
            f"{s['config']} {s['clean_stops']['left_group']}/{s['clean_stops']['sigterm']} left the group"
            for s in steps
            if s["store"] == "postgresql"
        )
        + ".",
    ]
    if kills:
        lines += [
            "",
            "Kill run: "
            + "; ".join(f"{s['config']}: SIGKILL at {s['killed_after_s']} s, {s['adoption']}" for s in kills)
            + ".",
        ]
    lines += [
        "",
        "CPU milliseconds per stored message, by part (what each message costs whoever runs it; the "
        "publishers are the simulated devices; in the steady runs each process's fixed cost, start and idle "
        "polling, is spread over fewer messages):",
        "",
        "| run | monitors | broker | postgres | publishers | busiest monitor, share of a core |",
        "|---|---|---|---|---|---|",
        *[
            "| {} | {} | {} |".format(
                s["config"],
                " | ".join(f"{v:.3f}" for v in cpu_ms_per_message(s).values()),
                f"{cpu_share(s)['busiest_monitor']:.2f}",
            )
            for s in steps
            if s["kind"] != "kill"
        ],
        "",
        f"![ingest rate and CPU per part]({result['plot']})",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        args_port, first, count, rate, seconds = sys.argv[2:7]
        publisher(int(args_port), int(first), int(count), float(rate), float(seconds))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--monitors", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--procs", type=int, default=2, help="publisher processes")
    ap.add_argument("--rate", type=float, default=3000.0, help="offered messages/s of the saturated runs")
    ap.add_argument("--steady-rate", type=float, default=500.0, help="offered messages/s of the steady runs")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--repeat", type=int, default=2, help="rounds of the saturated runs (interleaved)")
    ap.add_argument("--adopt-after", type=float, default=5.0)
    ap.add_argument("--no-baseline", action="store_true", help="skip the one monitor on SQLite")
    ap.add_argument("--no-steady", action="store_true", help="skip the steady (latency) runs")
    ap.add_argument("--no-kill", action="store_true", help="skip the run that SIGKILLs a monitor")
    ap.add_argument("--out", type=Path, default=RESULTS / "fleet_shared.json")
    ap.add_argument("--from-json", type=Path, help="only redraw the report and plot of a result file")
    args = ap.parse_args()
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
        plot(result["steps"], args.out.with_suffix(".png"), int(result["machine"]["cores"]))
        write_results(args.out, result, report(result, args))
        return

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edgekws.toolkit.fleet import LocalBroker
    from edgekws.toolkit.fleet._postgres import LocalPostgres

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a timeout's SIGTERM still cleans up (finally)
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="fleet-load-"))
    broker = LocalBroker(tmp).start()
    pg = LocalPostgres("-c max_connections=200 -c track_commit_timestamp=on").start()
    configs = [] if args.no_baseline else [Config(1, "sqlite", "saturated")]
    configs += [Config(m, "postgresql", "saturated", r) for r in range(args.repeat) for m in args.monitors]
    configs += [] if args.no_steady else [Config(m, "postgresql", "steady") for m in args.monitors]
    configs += [] if args.no_kill else [Config(2, "postgresql", "kill")]
    steps = []
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} runs"),
            TimeElapsedColumn(),
        ) as bar:  # fmt: skip
            task = bar.add_task("fleet_load", total=len(configs))
            for config in configs:
                bar.update(task, description=config.label)
                step = run_config(args, tmp, broker, pg, config)
                bar.console.print(json.dumps(step))
                steps.append(step)
                bar.advance(task)
    finally:
        broker.kill()
        pg.stop()
    cores = os.cpu_count() or 1
    png = args.out.with_suffix(".png")
    result = {
        "benchmark": "fleet_load",
        "command": command_line(),
        "machine": machine(),
        "load_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "broker": subprocess.run(
            [find_mosquitto(), "-h"], capture_output=True, text=True
        ).stdout.splitlines()[0],
        "postgresql": pg.version(),
        "plot": png.name,
        "steps": steps,
    }
    plot(steps, png, cores)
    text = report(result, args)
    write_results(args.out, result, text)
    print(text)


if __name__ == "__main__":
    main()
