"""Fleet monitors under load: 1, 2 and 4 `edgekws fleet serve --shared` processes on one mosquitto and one
PostgreSQL, a simulated fleet of paho clients publishing telemetry, and a monitor SIGKILLed mid-run.

Starts mosquitto (persistence off, LocalBroker) and a throwaway PostgreSQL (Debian's server programs,
LocalPostgres) on 127.0.0.1, then for each configuration a fresh database, the monitors (real processes:
commit, then PUBACK and cmd/ack per device; MQTT 5 shared subscription ``$share/bench/edgekws/v1/+/+/#``)
and ``--procs`` publisher processes sharing ``--devices`` simulated devices (one MQTT 5 client each, QoS 1,
schema-valid telemetry with unique ids) at ``--rate`` messages/s for ``--seconds``. It reports what was
sent (PUBACKed by the broker), what the store holds, lost (sent - stored), duplicate rows in the store, the
re-deliveries the monitors counted as duplicates, the ingest rate (stored rows / first-to-last insert), the
lag after the last publish, and the CPU seconds each part used (monitors, broker, PostgreSQL, publishers:
where the bottleneck is). A baseline runs one monitor on SQLite (the single-process default); the kill run
SIGKILLs one of two monitors halfway, and the other adopts its broker session after ``--adopt-after``.
Everything shares this machine's cores; the simulated devices have no on-disk outbox.

    .venv/bin/python benchmarks/fleet_load.py                      # sqlite 1; postgres 1, 2, 4; kill
    .venv/bin/python benchmarks/fleet_load.py --monitors 1 2 --rate 3000 --seconds 5
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
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, write_results

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
    """CPU seconds used by groups of processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: dict[str, Any]) -> None:
        self.groups = groups  # name -> callable returning the pids now
        self.before: dict[int, float] = {}

    def sample(self) -> dict[str, dict[int, float]]:
        return {name: {pid: cpu_s(pid) for pid in pids()} for name, pids in self.groups.items()}

    def start(self) -> None:
        self.first = self.sample()

    def stop(self, last: dict[str, dict[int, float]] | None = None) -> dict[str, float]:
        last = last or self.sample()
        return {
            name: round(sum(v - self.first[name].get(pid, 0.0) for pid, v in last[name].items()), 1)
            for name in self.groups
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


def run_config(
    args: argparse.Namespace, tmp: Path, broker: Any, pg: Any, monitors: int, store_kind: str, kill: bool
) -> dict[str, Any]:

    label = f"{store_kind}-{monitors}" + ("-kill" if kill else "")
    db = pg.new_database() if store_kind == "postgresql" else f"sqlite:///{tmp / (label + '.db')}"
    procs: list[subprocess.Popen[bytes]] = []
    publishers: list[subprocess.Popen[str]] = []
    try:
        return measure(args, tmp, broker, pg, monitors, store_kind, kill, label, db, procs, publishers)
    finally:  # never leave a monitor or a publisher running
        for p in [*procs, *publishers]:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def measure(
    args: argparse.Namespace,
    tmp: Path,
    broker: Any,
    pg: Any,
    monitors: int,
    store_kind: str,
    kill: bool,
    label: str,
    db: str,
    procs: list[subprocess.Popen[bytes]],
    publishers: list[subprocess.Popen[str]],
) -> dict[str, Any]:
    from edgekws.toolkit.fleet import FleetStore
    from edgekws.toolkit.fleet._broker import free_port

    for i in range(monitors):
        port, log = free_port(), tmp / f"{label}-mon{i}.log"
        command = [EDGEKWS, "fleet", "serve", "--broker", broker.url, "--db", db, "--port", str(port)]
        if store_kind == "postgresql":
            # a group per configuration: the broker must not route to the sessions of an earlier one
            command += ["--shared", f"bench-{label}", "--client-id", f"{label}-mon{i}"]
            command += ["--adopt-after", str(args.adopt_after)]
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
        wait_healthy(port, procs[-1], log)
    postmaster = int((Path(pg.folder) / "data" / "postmaster.pid").read_text().split()[0])
    meter = CpuMeter(
        {
            "monitors": lambda: [p.pid for p in procs],
            "broker": lambda: [broker.proc.pid],
            "postgresql": lambda: [postmaster, *children(postmaster)],
            "publishers": lambda: [p.pid for p in publishers],
        }
    )
    store = FleetStore(db)
    per = args.devices // args.procs
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
                str(args.rate / args.procs),
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
    cpu_last = meter.sample()
    while any(p.poll() is None for p in publishers):
        if kill and killed_at is None and time.monotonic() - t0 > 0.5 + args.seconds / 2:
            procs[0].send_signal(
                signal.SIGKILL
            )  # mid-batch: what it took and did not commit is its session's
            killed_at = time.monotonic()
        cpu_last = meter.sample()  # publishers are sampled while they live
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
        time.sleep(0.1)
        count = store.count("telemetry")
        if count != last_count:
            last_t, last_count = time.monotonic(), count
    cpu = meter.stop({**meter.sample(), "publishers": cpu_last["publishers"]})
    span = (last_t - first_t) if first_t and last_t else float("nan")
    distinct = store.distinct_messages("telemetry")
    redeliveries = sum(int(s.get("duplicates") or 0) for s in store.device_states())
    store.dispose()
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait(30)
    logs = [line for p in tmp.glob(f"{label}-mon*.log") for line in p.read_text().splitlines()]
    adopted = [line for line in logs if "from the session of" in line]
    return {
        "config": label,
        "store": store_kind,
        "monitors": monitors,
        "killed": kill,
        "offered_msgs_per_s": args.rate,
        "devices": args.devices,
        "sent": sent,
        "stored": count,
        "lost": sent - distinct,
        "duplicate_rows": count - distinct,
        "redeliveries_counted": redeliveries,
        "publish_s": round(max(r["publish_s"] for r in results), 3),
        "ingest_msgs_per_s": round(count / span, 1) if span == span and span > 0 else None,
        "lag_s": round(max(0.0, (last_t or publish_end) - publish_end), 2),
        "killed_after_s": round(killed_at - t0, 2) if killed_at else None,
        "adoption": adopted[0].split(" WARNING ")[-1] if adopted else None,
        "cpu_s": cpu,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        args_port, first, count, rate, seconds = sys.argv[2:7]
        publisher(int(args_port), int(first), int(count), float(rate), float(seconds))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--monitors", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--procs", type=int, default=2, help="publisher processes")
    ap.add_argument("--rate", type=float, default=4000.0, help="offered messages/s (all devices)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--adopt-after", type=float, default=5.0)
    ap.add_argument("--no-baseline", action="store_true", help="skip the one monitor on SQLite")
    ap.add_argument("--no-kill", action="store_true", help="skip the run that SIGKILLs a monitor")
    ap.add_argument("--out", type=Path, default=RESULTS / "fleet_load.json")
    args = ap.parse_args()

    from edgekws.toolkit.fleet import LocalBroker
    from edgekws.toolkit.fleet._postgres import LocalPostgres

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a timeout's SIGTERM still cleans up (finally)
    tmp = Path(tempfile.mkdtemp(prefix="fleet-load-"))
    broker = LocalBroker(tmp).start()
    pg = LocalPostgres("-c max_connections=200").start()
    configs = [] if args.no_baseline else [(1, "sqlite", False)]
    configs += [(m, "postgresql", False) for m in args.monitors]
    configs += [] if args.no_kill else [(2, "postgresql", True)]
    steps = []
    try:
        for monitors, store_kind, kill in configs:
            step = run_config(args, tmp, broker, pg, monitors, store_kind, kill)
            print(json.dumps(step), flush=True)
            steps.append(step)
    finally:
        broker.kill()
        pg.stop()
    postgres_version = pg.version()
    kills = [s for s in steps if s["killed"]]
    result = {
        "benchmark": "fleet_load",
        "command": "benchmarks/fleet_load.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "broker": subprocess.run(
            ["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True
        ).stdout.splitlines()[0],
        "postgresql": postgres_version,
        "steps": steps,
    }
    lines = [
        "# fleet_load: monitors sharing the ingest (MQTT 5 shared subscription, one PostgreSQL)",
        "",
        f"`{result['command']}` on {result['machine']['cpu']} ({result['machine']['cores']} cores, load "
        f"{result['machine']['load_average_1min']} at the end, shared with other work), {result['broker']}, "
        f"{postgres_version}; every process (publishers, broker, database, monitors) on these cores.",
        "",
        "| config | sent | stored | lost | duplicate rows | re-deliveries | ingest msg/s | lag s "
        "| CPU s: monitors / broker / postgres / publishers |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {s['config']} | {s['sent']} | {s['stored']} | {s['lost']} | {s['duplicate_rows']} "
            f"| {s['redeliveries_counted']} | {s['ingest_msgs_per_s']} | {s['lag_s']} "
            f"| {s['cpu_s']['monitors']} / {s['cpu_s']['broker']} / {s['cpu_s']['postgresql']} "
            f"/ {s['cpu_s']['publishers']} |"
            for s in steps
        ],
        "",
        f"Offered load: {args.rate:.0f} msg/s from {args.devices} devices for {args.seconds:g} s. Ingest rate"
        " = rows stored / time from the first to the last stored row; lag = last stored row after the last"
        " publish; lost = PUBACKed by the broker and not in the store; re-deliveries = messages the monitors"
        " received again and counted as duplicates (stored once). Kill run: "
        + "; ".join(f"{s['config']}: SIGKILL at {s['killed_after_s']} s, {s['adoption']}" for s in kills)
        + ".",
    ]
    write_results(args.out, result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
