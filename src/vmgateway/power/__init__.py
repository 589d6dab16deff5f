"""Power: the UPS as NUT's upsd reports it, and when the gateway must drain because of it.

The gateway only watches; NUT's own upsmon owns the host shutdown.
"""
