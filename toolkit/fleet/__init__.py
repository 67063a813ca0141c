"""edgekws.toolkit.fleet: the fleet monitor (MQTT ingest, device state, alerts, Prometheus, dashboard)."""

from edgekws.toolkit.fleet._alerts import Alert as Alert
from edgekws.toolkit.fleet._alerts import AlertRules as AlertRules
from edgekws.toolkit.fleet._monitor import BrokerUrl as BrokerUrl
from edgekws.toolkit.fleet._monitor import DeviceState as DeviceState
from edgekws.toolkit.fleet._monitor import FleetMonitor as FleetMonitor
from edgekws.toolkit.fleet._monitor import MqttIngest as MqttIngest
from edgekws.toolkit.fleet._server import FleetServer as FleetServer
from edgekws.toolkit.fleet._server import prometheus_text as prometheus_text
from edgekws.toolkit.fleet._store import FleetStore as FleetStore
