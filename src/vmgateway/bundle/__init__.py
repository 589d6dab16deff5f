"""Release bundles: one signed file that installs or upgrades a box offline.

    vmgateway-<version>.pyz            a zipapp the system python runs (`python3 X.pyz install`)
      __main__.py                      calls vmgateway.bootstrap
      vmgateway/...                    this package's source, for the bootstrap (stdlib-only parts)
      bundle/manifest.json             version, platform, python, and the SHA-256 of every member
      bundle/manifest.sig              Ed25519 signature of manifest.json (absent: unsigned)
      bundle/signer.pem                the public key that signed it
      wheels/*.whl, requirements.txt   the release and every dependency, pinned with hashes

The manifest is the only thing signed; every other member is trusted through its hash in it, and
a member the manifest does not name refuses the bundle. Verification uses only the standard
library (signature.py), because the first install runs on a box with nothing but python3.
"""
