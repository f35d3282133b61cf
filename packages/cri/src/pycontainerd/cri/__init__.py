"""pycontainerd-cri: the Kubernetes CRI (runtime.v1) served by pycontainerd's daemon."""

from __future__ import annotations
