#!/bin/sh
# Sets up everything vmgateway needs on a Debian 12 machine, then runs it or its tests.
#   sh scripts/setup.sh run    install, then run the gateway on its embedded defaults
#   sh scripts/setup.sh test   install (with the test peers), then run the whole test suite
# System packages come from apt (as root); Python packages go into ./.venv.
set -eu
cd "$(dirname "$0")/.."
what="${1:-}"
case "$what" in
  run) packages="python3 python3-venv python3-pip ca-certificates" ;;
  test) packages="python3 python3-venv python3-pip ca-certificates dcmtk procps iproute2 util-linux chromium nut-server nut-client systemd" ;;
  *) echo "usage: sh scripts/setup.sh run|test" >&2; exit 2 ;;
esac

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $packages
fi

python=/usr/bin/python3
[ -x "$python" ] || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
if [ "$what" = test ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
  shift
  exec .venv/bin/python -m pytest "$@"
else
  .venv/bin/pip install -q --disable-pip-version-check .
  shift
  exec .venv/bin/vmgateway run "$@"
fi
