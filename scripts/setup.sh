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
  test) packages="python3 python3-venv python3-pip ca-certificates dcmtk procps iproute2 util-linux chromium
                  libatomic1 nut-server nut-client systemd orthanc orthanc-dicomweb nftables systemd-container
                  debootstrap prometheus prometheus-alertmanager" ;;
  *) echo "usage: sh scripts/setup.sh run|test" >&2; exit 2 ;;
esac

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Peers the tests start themselves (Orthanc, NUT, Prometheus) must not be started as services by their
  # packages on default ports: policy-rc.d (Debian's switch for that) says no while installing.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT  # also when the install fails
  fi
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $packages
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
  if [ "$what" = test ]; then
    # The peers the tests start themselves must not start at the machine's next boot either
    # (their packages enable them). Offline: works with or without systemd running.
    systemctl --no-reload --quiet disable orthanc nut-server nut-monitor nut-driver-enumerator.path \
      nut-driver-enumerator.service prometheus prometheus-alertmanager
  fi
fi

python=/usr/bin/python3
[ -x "$python" ] || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
if [ "$what" = test ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
  shift
  [ $# -eq 0 ] || exec .venv/bin/python -m pytest "$@"
  # The whole suite. The booted box's tests (tests/test_box.py: ~5 minutes, mostly waiting on a
  # container's systemd, and no port of this machine's) run beside the rest, in a pytest of their
  # own with its own temporary folder: the suite stays within its 20 minutes. Both must pass.
  box_log=$(mktemp)
  .venv/bin/python -m pytest tests/test_box.py -p no:cacheprovider --basetemp=/tmp/vmgateway-box-tests \
    > "$box_log" 2>&1 &
  box=$!
  rest=0
  .venv/bin/python -m pytest --ignore=tests/test_box.py || rest=$?
  boxed=0
  wait "$box" || boxed=$?
  echo "=== tests/test_box.py (run beside the rest) ==="
  cat "$box_log"
  rm -f "$box_log"
  [ "$rest" -eq 0 ] && [ "$boxed" -eq 0 ]
else
  .venv/bin/pip install -q --disable-pip-version-check .
  # The README's commands work in a new shell: vmgateway on the PATH (a box's own link, to
  # /opt/vmgateway/current, is left alone).
  link=/usr/local/bin/vmgateway
  if [ "$(id -u)" = 0 ] && { [ ! -e "$link" ] || readlink "$link" | grep -q '/\.venv/bin/vmgateway$'; }; then
    ln -sfn "$PWD/.venv/bin/vmgateway" "$link"
  fi
  shift
  exec .venv/bin/vmgateway run "$@"
fi
