"""Fleet monitor under load: a simulated fleet of paho clients publishing telemetry through a real mosquitto.

Starts mosquitto (persistence off) on a free 127.0.0.1 port, the real monitor in this process
(FleetMonitor + FleetStore on SQLite + MqttIngest: commit, then PUBACK and cmd/ack per device), and
``--procs`` publisher processes that share ``--devices`` simulated devices (one MQTT 5 client each,
QoS 1, schema-valid telemetry payloads with unique ids). For each offered rate it reports what was sent,
what the monitor ingested (after de-duplication), what was lost, the ingest rate and how far the monitor
lagged behind the publishers; then the monitor's peak RSS. The simulated devices do not use the on-disk
outbox (this measures the monitor), and publishers, broker and monitor share this machine's cores.

    .venv/bin/python benchmarks/fleet_load.py                    # 100 devices, 2 processes, 1k/2k/4k msg/s
    .venv/bin/python benchmarks/fleet_load.py --rates 2000 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, machine, write_results

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


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


def run_step(
    port: int, monitor: object, devices: int, procs: int, rate: float, seconds: float
) -> dict[str, object]:
    from edgekws.toolkit.fleet import FleetMonitor

    assert isinstance(monitor, FleetMonitor)
    before = dict(monitor.messages_total)["telemetry"]
    dup_before = monitor.duplicates_total
    per = devices // procs
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--publisher",
                str(port),
                str(i * per),
                str(per),
                str(rate / procs),
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(procs)
    ]
    first_t = last_t = None
    last_count = before
    while any(c.poll() is None for c in children):
        n = monitor.messages_total["telemetry"]
        if n != last_count:
            now = time.monotonic()
            first_t = first_t or now
            last_t, last_count = now, n
        time.sleep(0.02)
    publish_end = time.monotonic()
    results = [json.loads(c.stdout.read().strip().splitlines()[-1]) for c in children if c.stdout]
    for c in children:
        if c.stdout:
            c.stdout.close()
    sent = sum(r["sent"] for r in results)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and monitor.messages_total["telemetry"] - before < sent:
        n = monitor.messages_total["telemetry"]
        if n != last_count:
            last_t, last_count = time.monotonic(), n
        time.sleep(0.02)
    n = monitor.messages_total["telemetry"]
    if n != last_count:
        last_t = time.monotonic()
    ingested = n - before
    span = (last_t - first_t) if first_t and last_t else float("nan")
    return {
        "offered_msgs_per_s": rate,
        "devices": devices,
        "publisher_processes": procs,
        "sent": sent,
        "puback": sum(r["acked"] for r in results),
        "ingested": ingested,
        "lost": sent - ingested,
        "duplicates": monitor.duplicates_total - dup_before,
        "publish_s": round(max(r["publish_s"] for r in results), 3),
        "ingest_s": round(span, 3),
        "ingest_msgs_per_s": round(ingested / span, 1) if span == span and span > 0 else None,
        "monitor_lag_s": round(max(0.0, (last_t or publish_end) - publish_end), 3),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        args_port, first, count, rate, seconds = sys.argv[2:7]
        publisher(int(args_port), int(first), int(count), float(rate), float(seconds))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--rates", type=float, nargs="+", default=[1000.0, 2000.0, 4000.0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=RESULTS / "fleet_load.json")
    args = ap.parse_args()

    from edgekws.agent.mqtt import BrokerUrl
    from edgekws.toolkit.fleet import FleetMonitor, FleetStore, LocalBroker, MqttIngest

    tmp = Path(tempfile.mkdtemp(prefix="fleet-load-"))
    broker = LocalBroker(tmp).start()
    port = broker.port
    store = FleetStore(f"sqlite:///{tmp / 'fleet.db'}")
    monitor = FleetMonitor(store)
    ingest = MqttIngest(monitor, BrokerUrl("127.0.0.1", port))
    try:
        ingest.start()
        if not ingest.connected.wait(10):
            raise SystemExit("the monitor could not connect to mosquitto")
        steps = []
        for rate in args.rates:
            step = run_step(port, monitor, args.devices, args.procs, rate, args.seconds)
            print(json.dumps(step), flush=True)
            steps.append(step)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        ingest.stop()  # flushes the last batch
        broker.kill()
    stored = store.count("telemetry")
    clean = [s for s in steps if s["lost"] == 0 and s["ingest_msgs_per_s"]]
    result = {
        "benchmark": "fleet_load",
        "command": "benchmarks/fleet_load.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "broker": subprocess.run(
            ["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True
        ).stdout.splitlines()[0],
        "steps": steps,
        "stored_rows": stored,
        "best_lossless_ingest_msgs_per_s": max((s["ingest_msgs_per_s"] for s in clean), default=None),  # type: ignore[type-var]
        "monitor_peak_rss_mb": round(rss_mb, 1),
    }
    lines = [
        "# fleet_load: monitor ingest under a simulated fleet",
        "",
        f"`{result['command']}` on {result['machine']['cpu']} ({result['machine']['cores']} cores, "
        f"shared with the publishers and the broker), {result['broker']}.",
        "",
        "| offered msg/s | devices | sent | ingested | lost | duplicates | ingest msg/s | monitor lag s |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {s['offered_msgs_per_s']:.0f} | {s['devices']} | {s['sent']} | {s['ingested']} "
            f"| {s['lost']} | "
            f"{s['duplicates']} | {s['ingest_msgs_per_s']} | {s['monitor_lag_s']} |"
            for s in steps
        ],
        "",
        f"Best lossless ingest rate: **{result['best_lossless_ingest_msgs_per_s']} msg/s**; monitor peak RSS "
        f"**{result['monitor_peak_rss_mb']} MB**; rows stored: {stored}.",
        "",
        "Ingest rate = messages ingested / time from the first to the last ingested message of the step "
        "(bounded by the offered rate when the monitor keeps up; monitor lag = how long after the last "
        "publish the last message was ingested); the monitor commits each batch to SQLite before its "
        "PUBACKs and "
        "per-device cmd/ack.",
    ]
    write_results(args.out, result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
