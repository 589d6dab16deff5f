"""Push transfers: items from the store to Vetmanager's side over DICOMweb STOW-RS and HTTPS.

A `Destination` per sink takes due items from the store in order of receipt, sends them with
bounded concurrency and records each outcome there; sinks (`stow`, `message_post`) know one
protocol each and nothing of scheduling. At-least-once: an item is marked delivered only after
the upstream said so, so a crash in between resends it (STOW is idempotent by SOP Instance
UID; HL7 carries an Idempotency-Key).
"""
