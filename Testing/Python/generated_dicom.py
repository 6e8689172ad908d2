"""Small, faithful DICOM files written with pydicom at test time (CT and MR image storage, real headers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def write_slice(path, pixels: np.ndarray, position, *, orientation=AXIAL, spacing=(0.8, 0.7), series_uid=None,
                instance: int = 1, modality: str = "CT", slope: float = 1.0, intercept: float = -1024.0,
                transfer_syntax=None, study_uid=None, thickness: float = 2.5) -> Path:
    """One single-frame greyscale slice. ``pixels`` is (rows, cols): int16 (signed) or uint16 (unsigned)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    pixels = np.ascontiguousarray(pixels)
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid or "1.2.826.0.1.3680043.8.498.2"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.Modality = modality
    ds.PatientID = "ESSNET-TEST"
    ds.PatientName = "Test^Generated"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.SliceThickness = thickness
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    signed = pixels.dtype == np.int16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if modality == "CT":
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = slope
    ds.PixelData = pixels.astype("<i2" if signed else "<u2").tobytes()
    path = Path(path)
    try:
        ds.save_as(str(path), enforce_file_format=True)
    except TypeError:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)
    return path


def write_series(folder, volume: np.ndarray, *, z0: float = -100.0, step: float = 2.5, names=None, **options) -> list:
    """A series from a (slices, rows, cols) array, slice n at z0 + n*step; returns the paths in slice order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, pixels in enumerate(volume):
        name = names[index] if names else f"slice{index:03d}.dcm"
        position = (-50.0, -60.0, z0 + index * step)
        paths.append(write_slice(folder / name, pixels, position, instance=index + 1, **options))
    return paths


def smooth_volume(shape=(5, 12, 10), seed: int = 0, dtype=np.int16) -> np.ndarray:
    """Distinct, non-constant voxel values (so any reordering shows)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2000, size=shape)
    return values.astype(dtype)
