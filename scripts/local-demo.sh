#!/usr/bin/env bash
# The whole credctl loop on one machine, all on loopback: install credctl into
# .venv, start moto's STS server on 127.0.0.1, create a device key, record the
# AWS federation, start the daemon, fetch credentials twice (a miss, then a
# hit), show the daemon's cache and stop it. Nothing outside this machine is
# contacted and nothing is left behind but .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
echo "==> installing credctl into .venv"
pip install --quiet --upgrade pip
pip install --quiet -e '.[demo]'

workdir=$(mktemp -d)
export CREDCTL_HOME="$workdir/credctl-home"
export AWS_CONFIG_FILE="$workdir/aws-config"
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cleanup() {
  credctl daemon stop >/dev/null 2>&1 || true
  [ -n "${moto_pid:-}" ] && kill "$moto_pid" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

echo "==> moto's STS server on 127.0.0.1:$port"
python -m moto.server -H 127.0.0.1 -p "$port" >"$workdir/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
  sleep 0.1
done

step() { echo; echo "\$ $*"; "$@"; }

step credctl init
step credctl setup aws \
  --role-arn arn:aws:iam::123456789012:role/credctl-device-role \
  --issuer-url https://issuer.example.com \
  --sts-endpoint "http://127.0.0.1:$port"
step credctl daemon start --background
echo
echo "\$ credctl auth    # a miss: signs a JWT, calls STS, caches the answer"
time credctl auth
echo
echo "\$ credctl auth    # a hit: served from the daemon's memory"
time credctl auth
step credctl daemon status
step credctl daemon stop
