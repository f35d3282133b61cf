"""Test configuration: hypothesis without wall-clock deadlines (see
:func:`pycontainerd.core.testing.load_hypothesis_profile`).
"""

from __future__ import annotations

from pycontainerd.core.testing import load_hypothesis_profile

load_hypothesis_profile()
