"""A device that only runs DeviceTelemetry (started as a subprocess by test_telemetry.py, then SIGKILLed)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from edgekws.agent._config import MqttConfig
from edgekws.agent._telemetry import DeviceTelemetry


def main() -> None:
    port, queue, fleet, device = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    settings = MqttConfig(broker=f"mqtt://127.0.0.1:{port}", outbox=queue, keepalive_s=5)
    link = DeviceTelemetry(
        settings,
        fleet=fleet,
        device=device,
        bundle={"name": "digits", "version": "1.0.0"},
        backend="emulator",
    )
    link.start()
    if not link.connected.wait(10):
        sys.exit("no connection")
    time.sleep(0.2)  # the retained online status is on its way
    print("ready", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
