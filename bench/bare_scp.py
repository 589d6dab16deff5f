"""Reference receiver for bench/dicom_ingest.py: pynetdicom alone, with nothing of vmgateway.

Chunked receive into a folder, fsync, rename, unlimited PDU: the ceiling of what any
pynetdicom-based receiver that keeps its promise can reach here. Usage: bare_scp.py PORT DIR
"""

import os
import sys
import tempfile

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

port, folder = int(sys.argv[1]), sys.argv[2]
_config.STORE_RECV_CHUNKED_DATASET = True
_config.UNRESTRICTED_STORAGE_SERVICE = True
_config.LOG_HANDLER_LEVEL = "none"
tempfile.tempdir = folder
received = 0


def on_c_store(event: evt.Event) -> int:
    global received
    fd = os.open(event.dataset_path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    received += 1
    os.replace(event.dataset_path, os.path.join(folder, f"{received}.dcm"))
    return 0x0000


ae = AE()
ae.maximum_pdu_size = 0
ae.maximum_associations = 50  # room for the idle associations of `--idle`
ae.require_called_aet = False
ae.add_supported_context(Verification, AllTransferSyntaxes)
ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, on_c_store)])
