"""The exceptions the core raises.

Every message is one line that names the problem and says what to do about it, so the CLI, the Slicer
modules and batch scripts can show ``str(error)`` as it is.
"""
from __future__ import annotations


class EssNetError(Exception):
    """Base class of every error the project raises on purpose."""


# --- inputs -----------------------------------------------------------------------------------------
class InputImageError(EssNetError):
    """The input cannot be used as an image: missing, unreadable, corrupt, wrong shape or values."""


class DicomSeriesError(InputImageError):
    """A DICOM folder that does not form one usable series."""


class ChaosLayoutError(InputImageError):
    """A CHAOS-style folder whose masks do not match its DICOM series."""


class VolumeTooLargeError(InputImageError):
    """The volume would not fit in memory; refused before allocating."""


class ModalityMismatchError(EssNetError):
    """The intensities say the volume is not the modality the model expects."""


class ModalityMismatchWarning(UserWarning):
    """Issued instead of ModalityMismatchError when the caller chose to go on anyway."""


class EmptyMaskWarning(UserWarning):
    """A metric met an empty mask (or one with no border); its value is inf or nan, as metrics.py documents."""


# --- outputs ----------------------------------------------------------------------------------------
class OutputPathError(EssNetError):
    """The output cannot be written where asked."""


# --- weights ----------------------------------------------------------------------------------------
class WeightsError(EssNetError):
    """A model's weights or model card cannot be used."""


class ModelNotFoundError(WeightsError):
    """No model of that name in the registry, cache or on disk."""


class ChecksumMismatchError(WeightsError):
    """The file's SHA256 is not the one the registry or model card promises."""


class ArchitectureMismatchError(WeightsError):
    """The weights do not fit the architecture the model card describes."""


class UnsafeWeightsError(WeightsError):
    """A weights file that could run code when loaded (a pickle); it is never executed."""


class DownloadError(WeightsError):
    """A model could not be downloaded."""


# --- running ----------------------------------------------------------------------------------------
class CancelledError(EssNetError):
    """The user cancelled; nothing was written."""


class DeviceError(EssNetError):
    """The requested compute device is not available."""


class MissingDependencyError(EssNetError):
    """A Python package the work needs (PyTorch, ...) is not installed and was not installed."""
