"""Handlers for MONAI engines."""

from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver, VerifiedCheckpointLoader, make_atomic

__all__ = ["AtomicCheckpointSaver", "VerifiedCheckpointLoader", "make_atomic"]
