"""A real Orthanc PACS for tests: started on 127.0.0.1 with its own configuration, storage and log in a tmp folder.

Independent of pytest::

    server = start_orthanc(tmp_dir)
    try:
        ...  # C-STORE to 127.0.0.1:server.dicom_port, AE title "ORTHANC"; read back with server.instances()
    finally:
        server.stop()

The Debian package ``orthanc`` installs the binary as ``/usr/sbin/Orthanc`` (not on a normal user's PATH, so
``/usr/sbin`` is searched too) and its default configuration as ``/etc/orthanc/orthanc.json`` (which loads the
plugins of ``/usr/share/orthanc/plugins``). Nothing of ``/etc/orthanc`` is used here: the configuration written
is complete (a JSON file is the whole configuration when Orthanc is given a file rather than a folder).

Refusals (a real failure status from a real PACS): Orthanc 1.10 has ``MaximumStorageSize`` and
``MaximumPatientCount`` but not ``MaximumStorageMode: "Reject"`` (new in 1.11.2): a full storage recycles the
oldest unprotected patient. When every stored patient is protected, the storage is full for good and a C-STORE
of a new patient is answered 0xA700 (out of resources; Orthanc logs "The file storage is full"). So:
``start_orthanc(tmp, max_patients=1)``, store one file of patient A, :meth:`OrthancServer.protect_all_patients`,
then every file of another patient is refused with 0xA700. (The Lua callback ``ReceivedCStoreInstanceFilter``
of 1.10 cannot do it: 1.10 ignores the status it returns, and discards with success when it returns 0.)
With Orthanc 1.11.2 or later, a limit also sets ``MaximumStorageMode: "Reject"`` (refuse with 0xA700 when full).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

AE_TITLE = "ORTHANC"
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])


def orthanc_binary():
    """Path of the ``Orthanc`` executable, or None when it is not installed."""
    return shutil.which("Orthanc", path=_SEARCH_PATH)


def orthanc_available() -> bool:
    """Whether the ``Orthanc`` binary is installed (Debian package ``orthanc``)."""
    return orthanc_binary() is not None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_version():
    """Orthanc's version as a tuple of ints (e.g. ``(1, 10, 1)``), or None when unknown."""
    binary = orthanc_binary()
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
        return tuple(int(x) for x in out.split()[1].split(".")[:3])
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


def orthanc_config(tmp_dir, dicom_port, http_port, max_storage_mb=0, max_patients=0, version=None):
    """The complete configuration (a dict) of a local, private Orthanc whose files all live under ``tmp_dir``."""
    storage = os.path.join(tmp_dir, "storage")
    tmp = os.path.join(tmp_dir, "tmp")
    for folder in (storage, tmp):
        os.makedirs(folder, exist_ok=True)
    config = {
        "Name": "mrtherm-test", "StorageDirectory": storage, "IndexDirectory": storage, "TemporaryDirectory": tmp,
        "StorageCompression": False, "MaximumStorageSize": int(max_storage_mb),
        "MaximumPatientCount": int(max_patients),
        "MaximumStorageCacheSize": 0, "LuaScripts": [], "Plugins": [], "ConcurrentJobs": 1,
        "HttpServerEnabled": True, "HttpPort": http_port, "HttpDescribeErrors": True, "HttpCompressionEnabled": False,
        "WebDavEnabled": False, "DicomServerEnabled": True, "DicomAet": AE_TITLE, "DicomCheckCalledAet": False,
        "DicomPort": dicom_port, "DefaultEncoding": "Latin1", "DicomScpTimeout": 30,
        "RemoteAccessAllowed": False, "SslEnabled": False, "AuthenticationEnabled": False, "RegisteredUsers": {},
        "DicomTlsEnabled": False, "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": False, "DicomAlwaysAllowMove": False, "DicomCheckModalityHost": False,
        "DicomModalities": {}, "DicomModalitiesInDatabase": False, "OrthancPeers": {}, "OrthancPeersInDatabase": False,
        "HttpProxy": "", "ExecuteLuaEnabled": False, "UnknownSopClassAccepted": False, "SaveJobs": False,
        "OverwriteInstances": False, "StableAge": 60, "StrictAetComparison": False, "CheckRevisions": False,
    }
    if (max_storage_mb or max_patients) and version and version >= (1, 11, 2):
        config["MaximumStorageMode"] = "Reject"  # refuse when full instead of recycling (Orthanc 1.11.2+)
    return config


class OrthancServer:
    """A running Orthanc (see :func:`start_orthanc`): its ports, a tiny REST client and :meth:`stop`."""

    def __init__(self, process, dicom_port, http_port, log_path, tmp_dir):
        self.process = process
        self.dicom_port = dicom_port
        self.http_url = f"http://127.0.0.1:{http_port}"
        self.log_path = log_path
        self.tmp_dir = tmp_dir
        self.ae_title = AE_TITLE
        # no proxy from the environment for 127.0.0.1
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def raw(self, path, timeout_s=10.0, method="GET", data=None) -> bytes:
        """Body of a REST request (``path`` from the root, e.g. ``/system``)."""
        req = urllib.request.Request(self.http_url + path, data=data, method=method)
        with self._opener.open(req, timeout=timeout_s) as resp:
            return resp.read()

    def get(self, path, timeout_s=10.0):
        """Parsed JSON of ``GET path``."""
        return json.loads(self.raw(path, timeout_s).decode("utf-8"))

    def instances(self) -> list:
        """Orthanc's identifiers of every stored instance."""
        return self.get("/instances")

    def instance_tags(self, instance_id) -> dict:
        """Simplified tags (keyword -> value) of one instance."""
        return self.get(f"/instances/{instance_id}/simplified-tags")

    def instance_file(self, instance_id) -> bytes:
        """The stored DICOM file of one instance."""
        return self.raw(f"/instances/{instance_id}/file", timeout_s=30.0)

    def sop_instance_uids(self) -> set:
        """SOP Instance UIDs of every stored instance."""
        return {self.instance_tags(i)["SOPInstanceUID"] for i in self.instances()}

    def protect_all_patients(self):
        """Protect every stored patient from recycling (so a full storage refuses new patients)."""
        for patient in self.get("/patients"):
            self.raw(f"/patients/{patient}/protected", method="PUT", data=b"1")

    def log_tail(self, n_chars=3000) -> str:
        """End of Orthanc's log file (for failure messages)."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()[-n_chars:]
        except OSError:
            return ""

    def stop(self, timeout_s=15.0):
        """Terminate Orthanc, wait for it, kill it when it does not end in ``timeout_s``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _port_open(port, timeout_s=1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _wait_ready(server, deadline_s):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            server.get("/system", timeout_s=2.0)
            if _port_open(server.dicom_port):
                return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"Orthanc did not answer GET /system within {deadline_s:.0f} s; log:\n{server.log_tail()}")


def start_orthanc(tmp_dir, max_storage_mb=0, max_patients=0, deadline_s=60.0, tries=3) -> OrthancServer:
    """Start Orthanc on 127.0.0.1 (free DICOM and HTTP ports) with everything under ``tmp_dir``; wait until ready.

    Parameters
    ----------
    tmp_dir : str or path-like
        Folder for the configuration, storage, index, temporary files and the log (``orthanc.log``).
    max_storage_mb : int
        ``MaximumStorageSize`` in MB (0: no limit). Orthanc 1.10 recycles unprotected patients when full rather
        than refusing; with 1.11.2 or later ``MaximumStorageMode: "Reject"`` is set too.
    max_patients : int
        ``MaximumPatientCount`` (0: no limit); with every stored patient protected, new patients are refused
        (with 1.11.2 or later, ``MaximumStorageMode: "Reject"`` is set too).
    deadline_s : float
        How long to wait for ``GET /system`` to answer and the DICOM port to accept connections.
    tries : int
        Starts with new ports when Orthanc exits at once (a port taken between choosing and binding it).

    Returns
    -------
    OrthancServer
    """
    binary = orthanc_binary()
    if binary is None:
        raise RuntimeError("Orthanc is not installed (Debian package 'orthanc')")
    tmp_dir = os.fspath(tmp_dir)
    os.makedirs(tmp_dir, exist_ok=True)
    version = orthanc_version()
    log_path = os.path.join(tmp_dir, "orthanc.log")
    for _ in range(tries):
        dicom_port, http_port = free_port(), free_port()
        while http_port == dicom_port:
            http_port = free_port()
        config_path = os.path.join(tmp_dir, "orthanc.json")
        with open(config_path, "w", encoding="utf-8") as fh:
            config = orthanc_config(tmp_dir, dicom_port, http_port, max_storage_mb, max_patients, version)
            json.dump(config, fh, indent=2)
        with open(os.path.join(tmp_dir, "orthanc.stdout"), "ab") as out:
            process = subprocess.Popen([binary, f"--logfile={log_path}", "--no-jobs", config_path], cwd=tmp_dir,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        server = OrthancServer(process, dicom_port, http_port, log_path, tmp_dir)
        try:
            if _wait_ready(server, deadline_s):
                return server
        except BaseException:
            server.stop()
            raise
        server.stop()
    raise RuntimeError(f"Orthanc exited at start {tries} times; log:\n{server.log_tail()}")
