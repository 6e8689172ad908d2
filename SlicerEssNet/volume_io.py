"""Reading and writing volumes with exactly the geometry their headers state.

Files (NIfTI, NRRD/NHDR, MHA/MHD) and DICOM series go through SimpleITK, so a ``Volume`` carries precisely the
spacing, origin and direction SimpleITK reports; CHAOS challenge folders go through ``chaos.py`` because their
slice order is defined by file name. Every failure is an ``InputImageError`` (or a subclass) with one line that
names the problem, and everything is checked from the headers before pixel data is read, so a 4D file or one
larger than memory is refused without allocating it. ``write_volume`` writes atomically.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import DicomSeriesError, EssNetError, InputImageError, OutputPathError, VolumeTooLargeError
from .validation import check_image_header, check_memory
from .volume import Volume

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".mha")
# Slice positions may differ from a perfect grid by rounding in the headers; more than this is a real gap.
POSITION_TOLERANCE_MM = 0.01
POSITION_TOLERANCE_FRACTION = 0.005
# Transfer syntaxes the GDCM inside SimpleITK decodes (uncompressed, deflate, RLE, JPEG, JPEG-LS, JPEG 2000).
_GDCM_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
}


# --- public API --------------------------------------------------------------------------------------------
def read_volume(path, max_bytes: int | None = None) -> Volume:
    """Read a NIfTI/NRRD/MHA file, a DICOM folder (or one of its files) or a CHAOS folder into a ``Volume``.

    The geometry is exactly what SimpleITK reports for the file (for CHAOS: what the name-ordered DICOM headers
    state). A 2D image comes back as a 1-slice volume. ``max_bytes`` caps the pixel buffer (default: the memory
    available now).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputImageError(f"input {path} does not exist: check the path")
    if path.is_dir():
        return _read_folder(path, max_bytes)
    try:
        n_bytes = path.stat().st_size
    except OSError as error:
        raise InputImageError(f"cannot open {path} ({error.strerror}): check the path and permissions") from None
    if n_bytes == 0:
        raise InputImageError(f"input {path} is empty (0 bytes): the file was not written completely; export it again")
    extension = file_extension(path)
    if extension == ".dcm" or (extension not in IMAGE_EXTENSIONS and _has_dicom_preamble(path)):
        return _read_dicom_file(path, max_bytes)
    if extension not in IMAGE_EXTENSIONS:
        raise InputImageError(
            f"{path.name} is not a supported image (extension '{extension or 'none'}'): give a NIfTI (.nii, "
            ".nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) file or a DICOM folder"
        )
    return _read_image_file(path, max_bytes)


def write_volume(volume: Volume, path) -> Path:
    """Write ``volume`` to .nii/.nii.gz/.nrrd/.mha atomically (a failure leaves no file); return the path."""
    import SimpleITK as sitk

    path = Path(path).expanduser()
    extension = file_extension(path)
    if extension not in WRITE_EXTENSIONS:
        raise OutputPathError(
            f"cannot write '{extension or path.name}' files: name the output .nii.gz, .nii, .nrrd or .mha"
        )
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise InputImageError(
            f"the volume to write has {array.ndim} array dimensions, not 3 (slice, row, column): reshape it first"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    try:
        image = Volume(array, volume.spacing, volume.origin, volume.direction).to_sitk()
    except (RuntimeError, TypeError, ValueError) as error:
        raise InputImageError(f"the volume cannot be written ({_itk_reason(error)}): check its voxel type") from None
    # NRRD and MetaImage compress with gzip like Slicer does; a plain .nii is uncompressed by its name.
    compress = extension in (".nrrd", ".mha")
    with atomic_path(path) as temporary:
        try:
            sitk.WriteImage(image, str(temporary), compress)
        except RuntimeError as error:
            raise OutputPathError(
                f"cannot write {path} ({_itk_reason(error)}): check free disk space and permissions"
            ) from None
    return path


def read_dicom_series(folder, series_uid: str | None = None, max_bytes: int | None = None) -> Volume:
    """Read one DICOM series from ``folder`` with SimpleITK's GDCM series reader (slices sorted by position).

    With several series in the folder, ``series_uid`` chooses one (``list_dicom_series`` shows them). Missing
    slices, uneven or sheared spacing, missing pixel data and undecodable compression raise ``DicomSeriesError``.
    """
    import SimpleITK as sitk

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputImageError(f"DICOM folder {folder} does not exist or is not a folder: check the path")
    series = list_dicom_series(folder)
    if not series:
        unusable = _unusable_dicom_files(folder, [])
        if unusable:
            raise DicomSeriesError(
                f"{folder} holds {len(unusable)} DICOM file(s) but no image series ({_unusable_reason(unusable[0])}): "
                "give a folder with CT or MR image slices"
            )
        raise DicomSeriesError(
            f"no DICOM series found in {folder} (subfolders are not searched): give the folder that holds the "
            "DICOM files"
        )
    if series_uid is None:
        if len(series) > 1:
            described = "; ".join(f"'{uid or '(none)'}' {len(files)} files" for uid, files in series[:6])
            more = f"; and {len(series) - 6} more" if len(series) > 6 else ""
            raise DicomSeriesError(
                f"{folder} holds {len(series)} DICOM series ({described}{more}): choose one with "
                "read_dicom_series(folder, series_uid=...) or give one file of the series you want"
            )
        series_uid, files = series[0]
    else:
        matches = [files for uid, files in series if uid == series_uid]
        if not matches:
            raise DicomSeriesError(
                f"no series '{series_uid}' in {folder} (it holds {', '.join(repr(uid) for uid, _ in series)}): "
                "check the SeriesInstanceUID"
            )
        files = matches[0]
    _check_left_out(folder, series_uid, [f for _, listed in series for f in listed])
    headers = [read_dicom_header(name) for name in files]
    _check_series_headers(folder, files, headers)
    _check_memory_for_slices(folder.name, headers, max_bytes)
    if len(files) > 1:
        positions, normal = _slice_positions(files, headers)
        check_slice_positions(positions, normal, files)
    elif int(headers[0].get("NumberOfFrames", 1) or 1) > 1:
        log.info("%s is a multi-frame file: its frame geometry is taken as GDCM reports it", files[0])

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(name) for name in files])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise _pixel_error(files[0], headers[0], error) from None
    except MemoryError:
        raise VolumeTooLargeError(f"{folder.name} does not fit in memory: crop it or free memory") from None
    volume = volume_from_image(image)
    return volume.with_array(_narrowed(volume.array))


def _narrowed(array: np.ndarray) -> np.ndarray:
    """GDCM returns int32 once a rescale intercept could overflow int16; CT/MR values fit in int16 (half the memory)."""
    if array.dtype == np.int32 and array.size and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16)
    return array


def list_dicom_series(folder) -> list:
    """``[(series_uid, [files sorted by position]), ...]`` for the DICOM series GDCM finds directly in ``folder``."""
    import SimpleITK as sitk

    folder = str(Path(folder).expanduser())
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        return [
            (uid, [Path(name) for name in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)])
            for uid in uids
        ]
    except RuntimeError as error:
        raise DicomSeriesError(f"cannot scan {folder} for DICOM series ({_itk_reason(error)}): check the folder") from None


def read_dicom_slices(files, max_bytes: int | None = None, name: str | None = None) -> Volume:
    """Stack single-frame DICOM files in exactly the order given (pixel data through pydicom).

    The geometry comes from ImageOrientationPatient, PixelSpacing and the ImagePositionPatient of the first and
    last file, so the k axis runs from the first file to the last; RescaleSlope/Intercept are applied per slice.
    This is how the CHAOS challenge defines its volumes (file-name order is authoritative there).
    """
    files = [Path(f) for f in files]
    if not files:
        raise DicomSeriesError(f"no DICOM files in {name or 'the list'}: give a folder with DICOM files")
    name = name or files[0].parent.name
    headers = [read_dicom_header(f) for f in files]
    _check_series_headers(name, files, headers)
    dtype = _check_memory_for_slices(name, headers, max_bytes)
    if any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in headers):
        raise DicomSeriesError(f"{name} holds multi-frame DICOM files: read the folder with read_dicom_series instead")
    first = headers[0]
    row_cosine, column_cosine = _orientation(files[0], first)
    row_mm, column_mm = _pixel_spacing(files[0], first)
    normal = np.cross(row_cosine, column_cosine)
    if len(files) > 1:
        positions, _ = _slice_positions(files, headers)
        check_slice_positions(positions, normal, files)
        step = (positions[-1] - positions[0]) / (len(files) - 1)
        slice_mm = float(np.linalg.norm(step))
        slice_axis = step / slice_mm
    else:
        slice_mm = _single_slice_thickness(first)
        slice_axis = normal
    origin = _position(files[0], first)

    rows, columns = int(first.Rows), int(first.Columns)
    array = np.empty((len(files), rows, columns), dtype=dtype)
    for index, (path, header) in enumerate(zip(files, headers)):
        pixels = _decode_pixels(path, header)
        if pixels.shape != (rows, columns):
            raise DicomSeriesError(
                f"{path.name} decodes to {pixels.shape} pixels, not the {rows} x {columns} its header states: "
                "the file is damaged; export the series again"
            )
        slope = float(header.get("RescaleSlope", 1) or 1)
        intercept = float(header.get("RescaleIntercept", 0) or 0)
        array[index] = pixels * slope + intercept if (slope != 1 or intercept != 0) else pixels
    array = _narrowed(array)
    direction = np.column_stack([row_cosine, column_cosine, slice_axis])
    return Volume(array, (column_mm, row_mm, slice_mm), tuple(origin), direction)


def read_dicom_header(path):
    """The header of one DICOM file (pixel data deferred, not loaded); ``InputImageError`` if it is not DICOM."""
    import pydicom

    path = Path(path)
    try:
        return pydicom.dcmread(str(path), defer_size=1024)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types (struct.error, ValueError, ...) on damage
        raise InputImageError(
            f"{path.name} is not a readable DICOM file ({_first_line(error)}): remove it from the folder or "
            "export it again"
        ) from None


def file_extension(path) -> str:
    """The lower-case extension, ``.nii.gz`` counted as one."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


# --- files ------------------------------------------------------------------------------------------------
_BYTES_PER_COMPONENT = {
    "8-bit unsigned integer": 1, "8-bit signed integer": 1, "16-bit unsigned integer": 2,
    "16-bit signed integer": 2, "32-bit unsigned integer": 4, "32-bit signed integer": 4,
    "64-bit unsigned integer": 8, "64-bit signed integer": 8, "32-bit float": 4, "64-bit float": 8,
}


def _read_image_file(path: Path, max_bytes: int | None, name: str | None = None) -> Volume:
    if file_extension(path) == ".nii.gz" and _has_uncompressed_sibling(path):
        with _unambiguous_link(path) as link:
            return _read_image_file(link, max_bytes, name=path.name)
    import SimpleITK as sitk

    name = name or path.name
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        pixel_type = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        size, spacing = reader.GetSize(), reader.GetSpacing()
        components = reader.GetNumberOfComponents()
    except RuntimeError as error:
        raise InputImageError(
            f"cannot read {name} as an image ({_itk_reason(error)}): check that it is a complete, valid "
            f"{file_extension(path)} file"
        ) from None
    if len(size) < 2:
        raise InputImageError(f"{name} is a {len(size)}D image: give a 2D or 3D image")
    if "complex" in pixel_type:
        raise InputImageError(f"{name} has complex voxels: save the magnitude image instead")
    component_bytes = _BYTES_PER_COMPONENT.get(pixel_type.replace("vector of ", ""), 8)
    check_image_header(name, size, components, component_bytes, spacing, max_bytes)
    if file_extension(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path, name)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputImageError(
            f"cannot read the voxels of {name} ({_itk_reason(error)}): the file is truncated or corrupt; "
            "export it again"
        ) from None
    except MemoryError:
        raise VolumeTooLargeError(f"{name} does not fit in memory: crop it or free memory") from None
    return volume_from_image(image)


def _has_uncompressed_sibling(path: Path) -> bool:
    """NIfTI's reader opens 'x.nii' (or 'x.hdr') when asked for 'x.nii.gz' if that file exists beside it."""
    stem = path.name[: -len(".nii.gz")]
    return any((path.parent / (stem + extension)).exists() for extension in (".nii", ".hdr", ".NII", ".HDR"))


@contextlib.contextmanager
def _unambiguous_link(path: Path):
    """The file under a name no sibling can shadow: a link (or copy) in a private temporary folder."""
    with tempfile.TemporaryDirectory(prefix="slicer-essnet-") as folder:
        link = Path(folder) / ("volume" + file_extension(path))
        try:
            os.symlink(path.resolve(), link)
        except (OSError, NotImplementedError):  # Windows without the symlink privilege
            shutil.copyfile(path, link)
        yield link


def _check_nifti_complete(path: Path, name: str) -> None:
    """ITK reads a truncated NIfTI without complaint (the missing voxels come back as zeros), so count the bytes."""
    import gzip

    try:
        import nibabel

        header = nibabel.load(str(path)).header
        expected = int(header.get_data_offset()) + int(np.prod(header.get_data_shape(), dtype=np.float64)) * int(
            header.get_data_dtype().itemsize
        )
    except Exception:  # noqa: BLE001 - nibabel could not parse what ITK did: ITK's reading stands on its own
        return
    if file_extension(path) == ".nii":
        actual = path.stat().st_size
    else:
        actual = 0
        try:
            with gzip.open(path, "rb") as stream:
                while actual < expected:
                    chunk = stream.read(1 << 22)
                    if not chunk:
                        break
                    actual += len(chunk)
        except (OSError, EOFError, zlib.error) as error:
            raise InputImageError(
                f"{name} is a damaged gzip stream ({_first_line(error)}): the file is truncated or corrupt; "
                "export it again"
            ) from None
    if actual < expected:
        raise InputImageError(
            f"{name} is truncated ({actual} of the {expected} bytes its header promises): export it again"
        )


def volume_from_image(image) -> Volume:
    """A ``Volume`` with exactly the image's geometry; a 2D image becomes one slice of 1 mm."""
    import SimpleITK as sitk

    if image.GetDimension() == 3:
        return Volume.from_sitk(image)
    spacing = tuple(image.GetSpacing()) + (1.0,)
    origin = tuple(image.GetOrigin()) + (0.0,)
    direction = np.eye(3)
    direction[:2, :2] = np.asarray(image.GetDirection()).reshape(2, 2)
    return Volume(sitk.GetArrayFromImage(image)[np.newaxis], spacing, origin, direction)


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read_folder(folder: Path, max_bytes: int | None) -> Volume:
    from . import chaos

    dicom_folder = chaos.find_chaos_dicom_folder(folder)
    if dicom_folder is not None:
        return chaos.read_chaos_image(dicom_folder, max_bytes=max_bytes)
    return read_dicom_series(folder, max_bytes=max_bytes)


def _read_dicom_file(path: Path, max_bytes: int | None) -> Volume:
    """One DICOM file stands for its series: the series in its folder that contains it."""
    from . import chaos

    if chaos.is_chaos_dicom_folder(path.parent):
        return chaos.read_chaos_image(path.parent, max_bytes=max_bytes)
    read_dicom_header(path)  # a clear error for a file that is not DICOM at all
    resolved = path.resolve()
    for uid, files in list_dicom_series(path.parent):
        if any(f.resolve() == resolved for f in files):
            return read_dicom_series(path.parent, series_uid=uid, max_bytes=max_bytes)
    raise DicomSeriesError(
        f"{path.name} is not part of any image series ({_unusable_reason(path)}): give a CT or MR image file "
        "or its folder"
    )


def _unusable_dicom_files(folder: Path, listed) -> list:
    """DICOM files in ``folder`` (by their preamble) that GDCM did not put in any series."""
    listed = {Path(f).resolve() for f in listed}
    try:
        candidates = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError:
        return []
    return [p for p in candidates if p.resolve() not in listed and _has_dicom_preamble(p)]


def _check_left_out(folder: Path, series_uid: str, listed) -> None:
    """GDCM silently leaves damaged slices and slices without pixels out of a series; refuse instead of losing them.

    Files of other series without pixel data (reports, DICOMDIR) are fine; a file whose header cannot be read
    might have been a slice of this series, so it is refused too.
    """
    for path in _unusable_dicom_files(folder, listed):
        try:
            header = read_dicom_header(path)
        except InputImageError:
            header = None
        if header is None or str(header.get("SeriesInstanceUID", "")) == series_uid:
            raise DicomSeriesError(
                f"{folder.name}: {_unusable_reason(path)}, so the series would be read without it: "
                "export the complete series again"
            )


def _unusable_reason(path: Path) -> str:
    try:
        header = read_dicom_header(path)
    except InputImageError:
        return f"{path.name} is damaged"
    if "PixelData" not in header:
        kind = getattr(header.get("SOPClassUID"), "name", None) or header.get("Modality", "") or "object"
        return f"{path.name} has no pixel data ({kind})"
    return f"{path.name} is damaged or has no image geometry"


# --- DICOM series checks ----------------------------------------------------------------------------------
def check_slice_positions(positions: np.ndarray, normal: np.ndarray, files) -> None:
    """Slices must step evenly along one line, in one direction, along the slice normal (no gantry tilt).

    ``positions`` are the ImagePositionPatient of the slices in reading order; ``files`` names them in errors.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if len(positions) < 2:
        return
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    distance = np.abs(along)
    name = Path(files[0]).parent.name or str(Path(files[0]).parent)
    flat = np.flatnonzero(distance < POSITION_TOLERANCE_MM)
    if flat.size:
        i = int(flat[0])
        raise DicomSeriesError(
            f"{name}: {Path(files[i]).name} and {Path(files[i + 1]).name} lie at the same position: the folder holds "
            "duplicate slices or several acquisitions; keep one acquisition per folder"
        )
    if np.any(np.sign(along) != np.sign(along[0])):
        raise DicomSeriesError(
            f"{name}: slice positions go back and forth in the file order: the slices of this folder do not form "
            "one ordered stack; check the files"
        )
    typical = float(np.median(distance))
    tolerance = max(POSITION_TOLERANCE_MM, POSITION_TOLERANCE_FRACTION * typical)
    lateral = np.linalg.norm(steps - np.outer(along, normal), axis=1)
    if np.max(lateral) > tolerance:
        raise DicomSeriesError(
            f"{name}: slices are shifted sideways by up to {np.max(lateral):.2f} mm per slice (gantry tilt or "
            "sheared stack): correct the tilt first (Slicer's DICOM module can) and save as NRRD"
        )
    off = np.flatnonzero(np.abs(distance - typical) > tolerance)
    if off.size == 0:
        return
    i = int(off[0])
    ratio = distance[i] / typical
    if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:
        missing = int(np.sum(np.maximum(np.round(distance / typical) - 1, 0)))
        raise DicomSeriesError(
            f"{name}: about {missing} slice(s) missing (a {distance[i]:.2f} mm gap after {Path(files[i]).name}, "
            f"spacing elsewhere {typical:.2f} mm): export the complete series"
        )
    raise DicomSeriesError(
        f"{name}: slice spacing is not uniform ({distance.min():.3f} to {distance.max():.3f} mm): resample the "
        "series to uniform spacing (e.g. in Slicer) and save it as NRRD or NIfTI"
    )


def _check_series_headers(name, files, headers) -> None:
    name = Path(str(name)).name
    for path, header in zip(files, headers):
        if "PixelData" not in header and "FloatPixelData" not in header and "DoubleFloatPixelData" not in header:
            raise DicomSeriesError(
                f"{name}: {Path(path).name} has no pixel data (not an image: a report, structure set or similar): "
                "remove it or give the image series"
            )
        if "Rows" not in header or "Columns" not in header:
            raise DicomSeriesError(f"{name}: {Path(path).name} has no Rows/Columns: the file is damaged")
        if int(header.get("SamplesPerPixel", 1) or 1) != 1:
            raise DicomSeriesError(
                f"{name}: {Path(path).name} is a colour image ({header.SamplesPerPixel} samples per pixel): "
                "give a greyscale CT or MR series"
            )
    first = headers[0]
    for path, header in zip(files[1:], headers[1:]):
        if (int(header.Rows), int(header.Columns)) != (int(first.Rows), int(first.Columns)):
            raise DicomSeriesError(
                f"{name}: {Path(path).name} is {header.Rows} x {header.Columns} but {Path(files[0]).name} is "
                f"{first.Rows} x {first.Columns}: the folder mixes series; keep one series per folder"
            )
    if len(headers) > 1:
        orientations = [tuple(np.round(_float_list(h.get("ImageOrientationPatient")), 4)) for h in headers]
        if len(set(orientations)) > 1:
            raise DicomSeriesError(
                f"{name}: the slices have different orientations (ImageOrientationPatient): the folder mixes "
                "series or localisers; keep one series per folder"
            )


def _check_memory_for_slices(name: str, headers, max_bytes: int | None):
    """Refuse before decoding; return the dtype the rescaled slices need while they are stacked."""
    first = headers[0]
    frames = sum(int(h.get("NumberOfFrames", 1) or 1) for h in headers)
    integral = all(
        float(h.get("RescaleSlope", 1) or 1).is_integer() and float(h.get("RescaleIntercept", 0) or 0).is_integer()
        for h in headers
    )
    bits = int(first.get("BitsAllocated", 16) or 16)
    dtype = np.dtype(np.int32 if integral and bits <= 16 else np.float32)
    n_bytes = frames * int(first.Rows) * int(first.Columns) * max(dtype.itemsize, bits // 8)
    check_memory(2 * n_bytes, f"{name} ({frames} slices of {first.Rows} x {first.Columns})", max_bytes)
    return dtype


def _slice_positions(files, headers):
    positions = np.array([_position(path, header) for path, header in zip(files, headers)])
    row_cosine, column_cosine = _orientation(files[0], headers[0])
    return positions, np.cross(row_cosine, column_cosine)


def _float_list(value) -> list:
    if value is None:
        return []
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return []


def _position(path, header) -> np.ndarray:
    values = _float_list(header.get("ImagePositionPatient"))
    if len(values) != 3 or not np.all(np.isfinite(values)):
        raise DicomSeriesError(
            f"{Path(path).name} has no valid ImagePositionPatient: the slice cannot be placed; export the series "
            "with its geometry"
        )
    return np.asarray(values)


def _orientation(path, header):
    values = np.asarray(_float_list(header.get("ImageOrientationPatient")))
    if values.size != 6 or not np.all(np.isfinite(values)):
        raise DicomSeriesError(f"{Path(path).name} has no valid ImageOrientationPatient: the slice cannot be placed")
    row, column = values[:3], values[3:]
    norms = np.linalg.norm(row), np.linalg.norm(column)
    if min(norms) < 1e-6 or abs(float(np.dot(row, column))) > 1e-3 * norms[0] * norms[1]:
        raise DicomSeriesError(
            f"{Path(path).name} has an ImageOrientationPatient whose axes are not perpendicular: the header is damaged"
        )
    return row / norms[0], column / norms[1]


def _pixel_spacing(path, header):
    values = _float_list(header.get("PixelSpacing"))
    if len(values) != 2 or not np.all(np.isfinite(values)) or min(values) <= 0:
        raise DicomSeriesError(
            f"{Path(path).name} has no valid PixelSpacing ({header.get('PixelSpacing')}): the pixel size is unknown"
        )
    return values[0], values[1]


def _single_slice_thickness(header) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        values = _float_list([header.get(keyword)]) if header.get(keyword) is not None else []
        if values and np.isfinite(values[0]) and values[0] > 0:
            return values[0]
    return 1.0


def _transfer_syntax(header):
    meta = getattr(header, "file_meta", None)
    return getattr(meta, "TransferSyntaxUID", None) if meta is not None else None


def _pixel_error(path, header, error) -> EssNetError:
    syntax = _transfer_syntax(header)
    if syntax is not None and getattr(syntax, "is_compressed", False):
        if str(syntax) not in _GDCM_TRANSFER_SYNTAXES:
            return DicomSeriesError(
                f"{Path(path).name} is compressed as {syntax.name} ({syntax}), which the installed decoders cannot "
                "read: decompress the series first (e.g. gdcmconv --raw or dcmdjpeg) or export it uncompressed"
            )
        return DicomSeriesError(
            f"cannot decode the {syntax.name} pixel data of {Path(path).name} ({_itk_reason(error)}): the file is "
            "damaged; export the series again (uncompressed if possible)"
        )
    return InputImageError(
        f"cannot read the pixel data of {Path(path).name} ({_itk_reason(error)}): the file is truncated or damaged; "
        "export the series again"
    )


def _decode_pixels(path, header) -> np.ndarray:
    try:
        return np.asarray(header.pixel_array)
    except Exception as error:  # noqa: BLE001 - pydicom's decoders raise many types
        syntax = _transfer_syntax(header)
        if syntax is not None and getattr(syntax, "is_compressed", False):
            raise DicomSeriesError(
                f"{Path(path).name} is compressed as {syntax.name} and cannot be decoded here ({_first_line(error)}): "
                "decompress the series first (e.g. gdcmconv --raw) or install a pydicom decoder (pylibjpeg)"
            ) from None
        raise InputImageError(
            f"cannot read the pixel data of {Path(path).name} ({_first_line(error)}): the file is truncated or "
            "damaged; export it again"
        ) from None


# --- messages ------------------------------------------------------------------------------------------
def _first_line(error) -> str:
    text = " ".join(str(error).split())
    return (text[:157] + "...") if len(text) > 160 else (text or type(error).__name__)


def _itk_reason(error) -> str:
    """The informative part of an ITK/SimpleITK exception, on one short line (no source paths or addresses)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    teem = [line for line in lines if line.startswith("[nrrd]")]
    if teem:  # NRRD's own messages go from general to specific: the last one says what is wrong
        return _first_line(re.sub(r"^\[nrrd\]\s*(\w+:\s*)?", "", teem[-1]))
    for line in lines:
        match = re.search(r"(?:itk::ERROR|ITK ERROR|sitk::ERROR|Description):\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?(.*)", line)
        if match and match.group(1):
            return _first_line(match.group(1).replace('"', "'"))
    meaningful = [line for line in lines if not line.startswith(("Exception thrown", "/"))]
    return _first_line(meaningful[0] if meaningful else (lines[0] if lines else type(error).__name__))
