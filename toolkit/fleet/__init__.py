"""edgekws.toolkit.fleet: the fleet monitor (MQTT ingest, device state, alerts, Prometheus, dashboard).

The names below are imported when first used, so that ``edgekws.toolkit.fleet._broker`` (the local
mosquitto, stdlib only) loads on a device's Python without the monitor's SQLAlchemy and paho-mqtt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekws.toolkit.fleet._alerts import Alert as Alert
    from edgekws.toolkit.fleet._alerts import AlertRules as AlertRules
    from edgekws.toolkit.fleet._broker import LocalBroker as LocalBroker
    from edgekws.toolkit.fleet._monitor import BrokerUrl as BrokerUrl
    from edgekws.toolkit.fleet._monitor import DeviceState as DeviceState
    from edgekws.toolkit.fleet._monitor import FleetMonitor as FleetMonitor
    from edgekws.toolkit.fleet._monitor import MqttIngest as MqttIngest
    from edgekws.toolkit.fleet._server import FleetServer as FleetServer
    from edgekws.toolkit.fleet._server import prometheus_text as prometheus_text
    from edgekws.toolkit.fleet._store import FleetStore as FleetStore

_WHERE = {
    "Alert": "_alerts",
    "AlertRules": "_alerts",
    "LocalBroker": "_broker",
    "BrokerUrl": "_monitor",
    "DeviceState": "_monitor",
    "FleetMonitor": "_monitor",
    "MqttIngest": "_monitor",
    "FleetServer": "_server",
    "prometheus_text": "_server",
    "FleetStore": "_store",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
