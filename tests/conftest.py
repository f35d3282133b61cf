"""Fixtures shared by the cross-package tests in this directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required under CI but was not found on PATH")
        pytest.skip(f"{name} not found on PATH")
    return path


@pytest.fixture(scope="session")
def full_checkout() -> Path:
    """The root of a complete checkout (every package's sources, uv.lock).

    Pants runs tests in a sandbox that holds only what BUILD targets provide
    (it sets ``PANTS_SANDBOX``); tests that build distributions with uv need
    the real tree and skip there. ``make test`` runs them.
    """
    if os.environ.get("PANTS_SANDBOX") or not (ROOT / "uv.lock").is_file():
        pytest.skip("needs a full checkout: run with `make test` or `uv run pytest`")
    return ROOT


@pytest.fixture(scope="session")
def checkout_files() -> Path:
    """The checkout's root, for tests that only read its files (no uv build).

    Under Pants the files they read (uv.lock, the Pants lockfile) are declared
    by ``//:workspace_files``, so these tests run there too.
    """
    if not (ROOT / "uv.lock").is_file():
        pytest.skip("needs the checkout's uv.lock")
    return ROOT


@pytest.fixture(scope="session")
def uv() -> str:
    """The uv executable."""
    return _need_tool("uv")
