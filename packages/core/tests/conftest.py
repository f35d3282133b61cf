"""Test configuration: hypothesis without wall-clock deadlines.

The suite runs with ``pytest -n auto`` on small CI machines next to real
daemons; a per-example deadline there measures the machine's load, not the
code. ``CI=true`` also derandomizes, so a CI failure reproduces locally with
the same examples.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("pycontainerd", deadline=None, print_blob=True)
settings.register_profile("pycontainerd-ci", deadline=None, print_blob=True, derandomize=True)
settings.load_profile("pycontainerd-ci" if os.environ.get("CI") == "true" else "pycontainerd")
