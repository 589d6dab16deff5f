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
                  debootstrap prometheus prometheus-alertmanager fuse3" ;;
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
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
  shift
  [ $# -eq 0 ] || exec .venv/bin/python -m pytest "$@"
  # The whole suite, in two pytests side by side so that it stays within its 20 minutes: the
  # upgrades' tests (tests/test_box.py, a booted Debian box: ~4 minutes mostly waiting on its
  # systemd; tests/test_upgrade.py: ~3 minutes mostly waiting on pip) in one, the rest in the
  # other. Each has its own ports (tests/support/gateway.py PORTS) and temporary folder. Both must pass.
  side_log=$(mktemp)
  VMGATEWAY_TEST_PORTS=25000-29999 .venv/bin/python -m pytest tests/test_box.py tests/test_upgrade.py \
    -p no:cacheprovider --basetemp=/tmp/vmgateway-upgrade-tests > "$side_log" 2>&1 &
  side=$!
  rest=0
  VMGATEWAY_TEST_PORTS=20000-24999 .venv/bin/python -m pytest --ignore=tests/test_box.py \
    --ignore=tests/test_upgrade.py || rest=$?
  sided=0
  wait "$side" || sided=$?
  echo "=== tests/test_box.py and tests/test_upgrade.py (run beside the rest) ==="
  cat "$side_log"
  rm -f "$side_log"
  [ "$rest" -eq 0 ] && [ "$sided" -eq 0 ]
else
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt .
  # The README's commands work in a new shell: vmgateway on the PATH (a box's own link, to
  # /opt/vmgateway/current, is left alone).
  link=/usr/local/bin/vmgateway
  if [ "$(id -u)" = 0 ] && { [ ! -e "$link" ] || readlink "$link" | grep -q '/\.venv/bin/vmgateway$'; }; then
    ln -sfn "$PWD/.venv/bin/vmgateway" "$link"
  fi
  shift
  exec .venv/bin/vmgateway run "$@"
fi
