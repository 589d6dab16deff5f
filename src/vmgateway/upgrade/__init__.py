"""Upgrades Vetmanager can trust on hundreds of boxes: a release is installed beside the
running one, switched to atomically, held on trial until a deep health check passes, and rolled
back to the last committed release — journal included — when it does not.

    <root>/releases/<version>/venv   each release with its own venv, on one file system
    <root>/current -> releases/<v>   what the service runs (replaced by rename, never unlinked first)
    <root>/state.json                committed, previous, trial, failed: survives reboots
    <root>/snapshots/                the journal as it was before the release on trial migrated it
    <root>/logs/                     what a failed release said during its trial
"""
