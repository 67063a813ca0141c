#!/usr/bin/env bash
# Create the broker credentials of one edge device (or of the fleet monitor):
#   * a password entry "<fleet>/<device>" in the mosquitto password file (mosquitto_passwd),
#   * a client certificate with CN "<fleet>/<device>" signed by a local CA (openssl; the CA is created on
#     first use and signs the broker's certificate too: see docs/mqtt.md "Security").
# The broker ACL (deploy/mosquitto/acl) then lets the device publish only under edgekws/v1/<fleet>/<device>/
# and read only its own commands.
#
# Usage:
#   make-device-credentials.sh [-d DIR] FLEET DEVICE     a device
#   make-device-credentials.sh [-d DIR] --user NAME      another user (e.g. edgekws-monitor), password only
#   make-device-credentials.sh [-d DIR] --server HOST    the broker's certificate (CN and SAN = HOST)
# DIR (default ./edgekws-pki) receives: ca.key ca.crt passwd, devices/<fleet>/<device>/{client.key,client.crt,
# password}, users/<name>.password, server.key server.crt. Keep ca.key offline; copy ca.crt, passwd and the
# server files to /etc/mosquitto/edgekws/ and send `kill -HUP` to mosquitto to reload the password file.
# Example:
#   deploy/mosquitto/make-device-credentials.sh -d /srv/pki kitchen box-17
set -euo pipefail

dir=./edgekws-pki
if [[ "${1:-}" == "-d" ]]; then dir=$2; shift 2; fi
[[ $# -ge 2 ]] || { sed -n '2,20p' "$0"; exit 2; }
mkdir -p "$dir"
umask 077

name_ok() { [[ "$1" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "error: '$1' must match [A-Za-z0-9_.-]+ (it is an MQTT topic level)" >&2; exit 2; }; }

ensure_ca() {
  if [[ ! -f "$dir/ca.crt" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=edgekws local CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    echo "created CA $dir/ca.crt" >&2
  fi
}

sign() {  # sign CN [SAN] -> $out.key/.crt
  local cn=$1 san=${2:-} out=$3 ext
  ext=$(mktemp)
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n' >"$ext"
  if [[ -n "$san" ]]; then printf 'extendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san" >>"$ext";
  else printf 'extendedKeyUsage=clientAuth\n' >>"$ext"; fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=${cn//\//\\/}" \
    -keyout "$out.key" -out "$out.csr" 2>/dev/null
  openssl x509 -req -in "$out.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 825 -extfile "$ext" -out "$out.crt" 2>/dev/null
  rm -f "$out.csr" "$ext"
}

add_password() {  # user -> prints the password file path of the secret
  local user=$1 secret_file=$2 pw
  pw=$(openssl rand -base64 24 | tr -d '/+=' | cut -c1-24)
  printf '%s\n' "$pw" >"$secret_file"
  if [[ -f "$dir/passwd" ]]; then mosquitto_passwd -b "$dir/passwd" "$user" "$pw";
  else mosquitto_passwd -c -b "$dir/passwd" "$user" "$pw"; fi
}

case "$1" in
  --user)
    name_ok "$2"; mkdir -p "$dir/users"
    add_password "$2" "$dir/users/$2.password"
    echo "user $2: password in $dir/users/$2.password" ;;
  --server)
    ensure_ca
    if [[ "$2" =~ ^[0-9.]+$ ]]; then san="IP:$2"; else san="DNS:$2"; fi
    sign "$2" "$san" "$dir/server"
    echo "broker certificate $dir/server.crt (key $dir/server.key) for $2" ;;
  *)
    fleet=$1 device=$2; name_ok "$fleet"; name_ok "$device"
    ensure_ca
    out="$dir/devices/$fleet/$device"; mkdir -p "$out"
    sign "$fleet/$device" "" "$out/client"
    add_password "$fleet/$device" "$out/password"
    cat <<TOML
device $fleet/$device: $out/{client.crt,client.key,password}
agent.toml (paths are relative to the config file: copy ca.crt and the files above next to it):
  [device]
  id = "$device"
  fleet = "$fleet"

  [telemetry.mqtt]
  enabled = true
  broker = "mqtts://BROKER:8883"
  username = "$fleet/$device"
  password_file = "password"

  [telemetry.mqtt.tls]
  ca_file = "ca.crt"
  cert_file = "client.crt"
  key_file = "client.key"
TOML
    ;;
esac
