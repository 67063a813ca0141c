"""edgekws.toolkit.fleet: the fleet monitor (MQTT ingest, device state, alerts, Prometheus, dashboard) and
the rollout tool.

Names are imported when first used (:mod:`edgekws.toolkit._lazy`), so that ``LocalBroker`` (the local
mosquitto, stdlib only) loads without the monitor's SQLAlchemy and paho-mqtt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekws.toolkit._lazy import lazy_exports

if TYPE_CHECKING:
    from edgekws.toolkit.fleet._alerts import Alert as Alert
    from edgekws.toolkit.fleet._alerts import AlertRules as AlertRules
    from edgekws.toolkit.fleet._broker import BrokerError as BrokerError
    from edgekws.toolkit.fleet._broker import LocalBroker as LocalBroker
    from edgekws.toolkit.fleet._monitor import DeviceState as DeviceState
    from edgekws.toolkit.fleet._monitor import FleetMonitor as FleetMonitor
    from edgekws.toolkit.fleet._monitor import MqttIngest as MqttIngest
    from edgekws.toolkit.fleet._rollout import RolloutError as RolloutError
    from edgekws.toolkit.fleet._rollout import run_rollout as run_rollout
    from edgekws.toolkit.fleet._server import FleetServer as FleetServer
    from edgekws.toolkit.fleet._server import device_table as device_table
    from edgekws.toolkit.fleet._server import headless_chromium as headless_chromium
    from edgekws.toolkit.fleet._server import prometheus_text as prometheus_text
    from edgekws.toolkit.fleet._store import FleetStore as FleetStore

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "Alert": "_alerts",
        "AlertRules": "_alerts",
        "BrokerError": "_broker",
        "LocalBroker": "_broker",
        "DeviceState": "_monitor",
        "FleetMonitor": "_monitor",
        "MqttIngest": "_monitor",
        "RolloutError": "_rollout",
        "run_rollout": "_rollout",
        "FleetServer": "_server",
        "device_table": "_server",
        "headless_chromium": "_server",
        "prometheus_text": "_server",
        "FleetStore": "_store",
    },
)
