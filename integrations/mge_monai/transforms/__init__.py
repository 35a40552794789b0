"""Level-aware MONAI transforms."""

from __future__ import annotations

from .level import LevelPyramidd, RestrictLevel, RestrictLeveld, pyramid_key

__all__ = ["LevelPyramidd", "RestrictLevel", "RestrictLeveld", "pyramid_key"]
