"""Real systemd-networkd applying rendered .network files, in a namespace the test made.

Run as `unshare -n -m --propagation private python -m tests.support.networkd DIR IFACE...` (root): in
that private network and mount namespace each IFACE is made as one end of a veth pair, DIR is
mounted over /etc/systemd/network, and networkd runs until every IFACE is configured (or
failed). It prints the resulting addresses, routes and link states as JSON, and stops.
Nothing leaves the namespace: its links are not connected to anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

NETWORKD = "/lib/systemd/systemd-networkd"
TIMEOUT_S = 30


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def main(folder: str, interfaces: list[str]) -> int:
    _run("ip", "link", "set", "lo", "up")
    for number, interface in enumerate(interfaces):
        _run("ip", "link", "add", interface, "type", "veth", "peer", "name", f"peer{number}")
        _run("ip", "link", "set", f"peer{number}", "up")
    # A read-only sysfs of this namespace tells networkd there is no udev to wait for.
    _run("mount", "-t", "sysfs", "-o", "ro", "sysfs", "/sys")
    _run("mount", "--bind", folder, "/etc/systemd/network")
    _run("mount", "-t", "tmpfs", "tmpfs", "/run/systemd")
    os.makedirs("/run/systemd/netif", exist_ok=True)
    _run("chown", "systemd-network:systemd-network", "/run/systemd/netif")
    networkd = subprocess.Popen([NETWORKD], stderr=subprocess.PIPE, text=True,
                                env=os.environ | {"SYSTEMD_LOG_LEVEL": "debug"})
    settled: set[str] = set()
    log: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert networkd.stderr is not None
        for line in networkd.stderr:
            log.append(line.rstrip())
            for interface in interfaces:
                if line.startswith(f"{interface}: State changed:") and line.rstrip().endswith(
                        ("-> configured", "-> failed", "-> unmanaged")):
                    settled.add(interface)
            if settled == set(interfaces):
                done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    finished = done.wait(TIMEOUT_S)
    result = {"settled": sorted(settled), "addresses": json.loads(_run("ip", "-j", "addr")),
              "routes": json.loads(_run("ip", "-j", "route")), "finished": finished,
              "log": [line for line in log if any(line.startswith(i) for i in interfaces)][-60:]}
    networkd.terminate()
    networkd.wait(10)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
