"""The host around the gateway: systemd, and (later) the files a box needs."""
