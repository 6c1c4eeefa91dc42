"""Errors a user can act on. The CLI prints their message and exits non-zero, no traceback."""
from __future__ import annotations


class VitclsError(Exception):
    """Base class: something the user can fix (a name, a path, a file)."""


class UnknownVariantError(VitclsError, KeyError):
    """A variant key that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(VitclsError):
    """Pretrained weights are missing, unreachable, or do not fit the architecture."""


class DatasetError(VitclsError):
    """A dataset folder is missing, empty, or laid out differently than expected."""


class StoreError(VitclsError):
    """An extraction store is missing, incomplete, or was made with another configuration."""


class IncompleteStoreError(StoreError):
    """A store an interrupted run left: rerunning the same extraction resumes it."""


class DamagedStoreError(StoreError):
    """A store whose files do not match its manifest (truncated, garbage, or a checksum that
    differs): it is never read or resumed; the message names the file."""


class NoClassHeadError(VitclsError):
    """A class-space analysis asked of a model without a classifier (the ImageNet-21k ViTs)."""


class WriteError(VitclsError, OSError):
    """A folder that cannot take a write (full, read-only, over a size limit): nothing that was
    there is lost, and rerunning once there is room resumes. An ``OSError`` too, so that code
    which treats a failed write as "not cached" keeps doing so."""
