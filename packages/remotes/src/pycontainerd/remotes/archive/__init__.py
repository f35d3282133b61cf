"""Image archives: import and export OCI image layouts and ``docker save`` tars.

:func:`import_images` reads an archive into the content store under a lease
and records its images (containerd's ``Client.Import``); :func:`export_images`
writes images as an OCI layout tar with a Docker ``manifest.json``
(``Client.Export``). Unpacking imported images is
:func:`pycontainerd.remotes.unpack.unpack`'s job.
"""

from __future__ import annotations

from pycontainerd.remotes.archive.exporter import ExportOptions, export_images, write_archive
from pycontainerd.remotes.archive.importer import ImportOptions, import_images, import_index

__all__ = [
    "ExportOptions",
    "ImportOptions",
    "export_images",
    "import_images",
    "import_index",
    "write_archive",
]
