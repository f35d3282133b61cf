"""Root conftest: only acts under Pants (``PANTS_SANDBOX`` set by pants.toml).

Pants puts the sources on ``sys.path`` of the pytest process only (through
``PEX_EXTRA_SYS_PATH``); a test that starts ``python -m pycontainerd.daemon``
or probes an import in a fresh interpreter would not find them. Exporting the
absolute ``sys.path`` as ``PYTHONPATH`` gives child interpreters the same view,
as a ``uv run`` venv does.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("PANTS_SANDBOX"):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        dict.fromkeys(os.path.abspath(p) for p in sys.path if p)
    )
