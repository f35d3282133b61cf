"""A small runnable image built offline from the system's static busybox, for registry tests."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

from pycontainerd.client.remotes import mediatypes as mt
from pycontainerd.client.remotes.testing import Blob, Image, sha256
from pycontainerd.core import platforms

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "cat", "sleep", "ls", "true", "id", "hostname")


def busybox_layer() -> bytes:
    """An uncompressed layer: ``bin/busybox``, applet links, ``etc/passwd``, empty mount points."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return raw.getvalue()


def busybox_image() -> Image:
    """A one-layer OCI image for this host's platform; command ``/bin/sh``."""
    layer = busybox_layer()
    blob = Blob(mt.OCI_LAYER_GZIP, gzip.compress(layer, mtime=0))
    host = platforms.host()
    config = Blob(
        mt.OCI_CONFIG,
        json.dumps(
            {
                "architecture": host.architecture,
                "os": host.os,
                "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
            },
            sort_keys=True,
        ).encode(),
    )
    manifest = Blob(
        mt.OCI_MANIFEST,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [blob.descriptor()],
            },
            sort_keys=True,
        ).encode(),
    )
    return Image(root=manifest, blobs=[blob, config], diff_ids=[sha256(layer)])
