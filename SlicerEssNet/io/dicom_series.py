"""DICOM series: find them in a folder, check that they form one regular stack, and read them.

Series are found with pydicom from the headers alone (pixel data deferred), so every file in the folder is
seen: a damaged slice or one without pixel data is reported instead of silently left out, and damaged pixel
data is caught before GDCM parses it (GDCM allocates gigabytes on some broken encapsulated streams). The pixels
are then read by SimpleITK's GDCM series reader, so the geometry is exactly what SimpleITK reports.
``read_dicom_slices`` instead stacks files in a given order with pydicom (the CHAOS layout needs that).
"""
from __future__ import annotations

import contextlib
import logging
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DicomSeriesError, EssNetError, InputImageError, VolumeTooLargeError
from ..validation import check_memory
from ..volume import Volume, volume_from_image

log = logging.getLogger(__name__)

# Slice positions may differ from a perfect grid by rounding in the headers; more than this is a real gap.
POSITION_TOLERANCE_MM = 0.01
POSITION_TOLERANCE_FRACTION = 0.005
# Transfer syntaxes the GDCM inside SimpleITK decodes (uncompressed, deflate, RLE, JPEG, JPEG-LS, JPEG 2000).
GDCM_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
}
NATIVE_TRANSFER_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
DEFLATED = "1.2.840.10008.1.2.1.99"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_TEXT_KEYWORDS = ("SeriesInstanceUID", "SOPClassUID", "Modality", "ImagePositionPatient", "ImageOrientationPatient",
                  "PixelSpacing")
_NUMBER_KEYWORDS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "NumberOfFrames", "InstanceNumber",
                    "RescaleSlope", "RescaleIntercept", "SliceThickness", "SpacingBetweenSlices")


@dataclass
class FolderScan:
    """What a folder holds: image series (files sorted by position), damaged files, DICOM files without pixels."""

    series: dict = field(default_factory=dict)  # uid -> [(path, header), ...]
    damaged: list = field(default_factory=list)  # [(path, reason)]
    without_pixels: list = field(default_factory=list)  # [(path, header)]


# --- public API --------------------------------------------------------------------------------------------
def list_dicom_series(folder) -> list:
    """``[(series_uid, [files sorted by position]), ...]`` for the image series directly in ``folder``."""
    scan = scan_dicom_folder(folder)
    return [(uid, [path for path, _ in members]) for uid, members in scan.series.items()]


def scan_dicom_folder(folder) -> FolderScan:
    """Group the DICOM files directly in ``folder`` (by preamble or a .dcm name) by SeriesInstanceUID."""
    folder = Path(folder).expanduser()
    scan = FolderScan()
    try:
        candidates = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as error:
        raise InputImageError(f"cannot list {folder} ({error.strerror}): check the path and permissions") from None
    for path in candidates:
        if not (has_dicom_preamble(path) or path.suffix.lower() == ".dcm"):
            continue  # notes, thumbnails, exports beside the series
        try:
            header = read_dicom_header(path)
        except InputImageError as error:
            scan.damaged.append((path, str(error)))
            continue
        if not any(keyword in header for keyword in _PIXEL_KEYWORDS):
            scan.without_pixels.append((path, header))
            continue
        scan.series.setdefault(str(header.get("SeriesInstanceUID", "") or ""), []).append((path, header))
    for uid, members in scan.series.items():
        scan.series[uid] = sorted(members, key=_position_order)
    return scan


def read_dicom_series(folder, series_uid: str | None = None, max_bytes: int | None = None) -> Volume:
    """Read one DICOM series from ``folder`` with SimpleITK's GDCM series reader (slices sorted by position).

    With several series in the folder, ``series_uid`` chooses one (``list_dicom_series`` shows them). Damaged or
    pixel-less slices, missing slices, uneven or sheared spacing and undecodable compression raise
    ``DicomSeriesError``.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputImageError(f"DICOM folder {folder} does not exist or is not a folder: check the path")
    scan = scan_dicom_folder(folder)
    series_uid, members = _choose_series(folder, scan, series_uid)
    if scan.damaged:  # it may well have been a slice of this series
        raise DicomSeriesError(
            f"{folder.name}: {scan.damaged[0][0].name} is damaged, so the series would be read without it: export "
            "the complete series again"
        )
    for path, header in scan.without_pixels:
        if str(header.get("SeriesInstanceUID", "") or "") == series_uid:
            raise DicomSeriesError(
                f"{folder.name}: {path.name} belongs to the series but has no pixel data: export the complete "
                "series again"
            )
    files = [path for path, _ in members]
    headers = [header for _, header in members]
    with _header_errors(folder.name):
        return _read_with_gdcm(folder.name, files, headers, max_bytes)


@contextlib.contextmanager
def _header_errors(name: str):
    """pydicom interprets values lazily, so damage can surface on any access: as a DicomSeriesError, one line."""
    try:
        yield
    except EssNetError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, NotImplementedError, OverflowError,
            UnicodeError, struct.error) as error:
        raise DicomSeriesError(
            f"{name}: a DICOM header cannot be interpreted ({type(error).__name__}: {first_line(error)}): the file "
            "is damaged; export the series again"
        ) from None


def read_dicom_file(path, max_bytes: int | None = None) -> Volume:
    """One DICOM file stands for its series: the series in its folder that contains it."""
    path = Path(path).expanduser()
    header = read_dicom_header(path)  # a clear error for a file that is not DICOM at all
    if not any(keyword in header for keyword in _PIXEL_KEYWORDS):
        raise DicomSeriesError(
            f"{path.name} has no pixel data ({_kind_of(header)}): give a CT or MR image file or its folder"
        )
    return read_dicom_series(path.parent, series_uid=str(header.get("SeriesInstanceUID", "") or ""),
                             max_bytes=max_bytes)


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
    with _header_errors(name):
        headers = [read_dicom_header(f) for f in files]
        _check_series_headers(name, files, headers)
        dtype = _check_memory_for_slices(name, headers, max_bytes)
        if any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in headers):
            raise DicomSeriesError(
                f"{name} holds multi-frame DICOM files: read the folder with read_dicom_series instead"
            )
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
        array = narrowed(array)
        direction = np.column_stack([row_cosine, column_cosine, slice_axis])
        return Volume(array, (column_mm, row_mm, slice_mm), tuple(origin), direction)


def read_dicom_header(path):
    """The header of one DICOM file (pixel data deferred, not loaded); ``InputImageError`` if it is not DICOM."""
    import pydicom

    path = Path(path)
    try:
        header = pydicom.dcmread(str(path), defer_size=1024)
        # pydicom parses values lazily: convert the ones used here now, so damage shows up here and only here
        for keyword in _TEXT_KEYWORDS:
            header.get(keyword)
        for keyword in _NUMBER_KEYWORDS:
            if header.get(keyword) is not None and header.get(keyword) != "":
                float(header.get(keyword))
    except Exception as error:  # noqa: BLE001 - pydicom raises many types (struct.error, ValueError, ...) on damage
        raise InputImageError(
            f"{path.name} is not a readable DICOM file ({first_line(error)}): remove it from the folder or "
            "export it again"
        ) from None
    return header



def _kind_of(header) -> str:
    """What a DICOM file without pixel data is, for messages: its SOP class or modality when it says."""
    kind = getattr(header.get("SOPClassUID"), "name", None) or header.get("Modality", "")
    if kind:
        return f"a {kind}, not an image"
    return "it names no SOP class or modality either: a damaged file, or not an image"  # garbage parses this way


def has_dicom_preamble(path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


# --- series ---------------------------------------------------------------------------------------------
def _choose_series(folder: Path, scan: FolderScan, series_uid):
    series = list(scan.series.items())
    if not series:
        if scan.without_pixels:
            path, header = scan.without_pixels[0]
            raise DicomSeriesError(
                f"{folder} holds DICOM files but no image series ({path.name} has no pixel data: "
                f"{_kind_of(header)}): give a folder with CT or MR image slices"
            )
        if scan.damaged:
            raise DicomSeriesError(
                f"{folder} holds no readable DICOM image ({scan.damaged[0][0].name} is damaged): export the series "
                "again"
            )
        raise DicomSeriesError(
            f"no DICOM series found in {folder} (subfolders are not searched): give the folder that holds the "
            "DICOM files"
        )
    if series_uid is None:
        if len(series) > 1:
            described = "; ".join(f"'{uid or '(none)'}' {len(members)} files" for uid, members in series[:6])
            more = f"; and {len(series) - 6} more" if len(series) > 6 else ""
            raise DicomSeriesError(
                f"{folder} holds {len(series)} DICOM series ({described}{more}): choose one with "
                "read_dicom_series(folder, series_uid=...) or give one file of the series you want"
            )
        return series[0]
    if series_uid not in scan.series:
        raise DicomSeriesError(
            f"no series '{series_uid}' in {folder} (it holds {', '.join(repr(uid) for uid, _ in series)}): "
            "check the SeriesInstanceUID"
        )
    return series_uid, scan.series[series_uid]


def _position_order(member) -> tuple:
    """Along the slice normal like GDCM's sorter; files without geometry by InstanceNumber, then by name."""
    path, header = member
    position = _float_list(header.get("ImagePositionPatient"))
    orientation = _float_list(header.get("ImageOrientationPatient"))
    if len(position) == 3 and len(orientation) == 6 and np.all(np.isfinite(position + orientation)):
        distance = float(np.dot(np.cross(orientation[:3], orientation[3:]), position))
    else:
        distance = float("inf")
    try:
        instance = int(header.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        instance = 0
    return distance, instance, path.name


def _read_with_gdcm(name: str, files: list, headers: list, max_bytes: int | None) -> Volume:
    import SimpleITK as sitk


    _check_series_headers(name, files, headers)
    _check_memory_for_slices(name, headers, max_bytes)
    if len(files) > 1:
        positions, normal = _slice_positions(files, headers)
        check_slice_positions(positions, normal, files)
    elif int(headers[0].get("NumberOfFrames", 1) or 1) > 1:
        log.info("%s is a multi-frame file: its frame geometry is taken as GDCM reports it", files[0])
    for path, header in zip(files, headers):
        _check_pixel_data(path, header)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(path) for path in files])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        culprit = next((n for n, path in enumerate(files) if str(path) in str(error)), 0)
        raise _pixel_error(files[culprit], headers[culprit], error) from None
    except MemoryError:
        raise VolumeTooLargeError(f"{name} does not fit in memory: crop it or free memory") from None
    volume = volume_from_image(image)
    return volume.with_array(narrowed(volume.array))


def narrowed(array: np.ndarray) -> np.ndarray:
    """GDCM returns int32 once a rescale intercept could overflow int16; CT/MR values fit in int16 (half the memory)."""
    if array.dtype == np.int32 and array.size and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16)
    return array


# --- checks ---------------------------------------------------------------------------------------------
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


def _check_pixel_data(path, header) -> None:
    """Before GDCM parses it: a decoder must exist, and the pixel data must be complete and well formed."""
    syntax = _transfer_syntax(header)
    if syntax is not None and str(syntax) not in GDCM_TRANSFER_SYNTAXES:
        raise DicomSeriesError(
            f"{Path(path).name} is encoded as {_syntax_name(syntax)}, which the installed decoders cannot read: "
            "decompress the series first (e.g. gdcmconv --raw or dcmdjpeg) or export it uncompressed"
        )
    compressed = _is_compressed(syntax)
    if str(syntax) == DEFLATED:
        return  # positions refer to the inflated data set: nothing to compare with the file size
    element = _raw_element(header, "PixelData")
    value_tell = getattr(element, "value_tell", None)
    if element is None or value_tell is None:
        return
    name, file_size = Path(path).name, Path(path).stat().st_size
    if getattr(element, "is_undefined_length", False) or int(element.length) == 0xFFFFFFFF:
        with open(path, "rb") as handle:
            handle.seek(value_tell)
            end = _encapsulated_end(handle.read())
        if end is None:
            raise DicomSeriesError(f"{name} has damaged or truncated compressed pixel data: export the series again")
        data_end = value_tell + end
    else:
        expected = (int(header.Rows) * int(header.Columns) * int(header.get("NumberOfFrames", 1) or 1)
                    * int(header.get("SamplesPerPixel", 1) or 1) * int(header.get("BitsAllocated", 16) or 16) + 7) // 8
        data_end = value_tell + int(element.length)
        present = min(int(element.length), file_size - value_tell)
        if not compressed and present < expected:
            raise DicomSeriesError(
                f"{name} is truncated ({present} of {expected} pixel bytes): export the series again"
            )
    # Elements running past the end of the file, or bytes after the last one, are damage pydicom tolerates but
    # GDCM parses (and may allocate gigabytes for).
    ends = {}
    for tag in header.keys():
        raw = element if tag == element.tag else _raw_element(header, tag)
        if getattr(raw, "value_tell", None) is not None and int(raw.length) != 0xFFFFFFFF:
            ends[tag] = raw.value_tell + int(raw.length)
    ends[element.tag] = data_end
    last = max(header.keys())
    if max(ends.values()) > file_size or (last in ends and ends[last] != file_size):
        raise DicomSeriesError(
            f"{name} is damaged (its elements do not end where the file ends): export the series again"
        )


def _raw_element(header, key):
    """An element exactly as read: never converted, a deferred value never loaded (pydicom 2 and 3 alike)."""
    from pydicom.tag import Tag

    store = getattr(header, "_dict", None)
    if store is None:  # not expected; the public route converts but still works
        return header.get_item(key) if key in header else None
    return store.get(Tag(key))


def _encapsulated_end(data: bytes) -> int | None:
    """Offset just past the sequence delimiter (FFFE,E0DD) if every item (FFFE,E000) lies within the data."""
    position = 0
    while position + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, position)
        if (group, element) == (0xFFFE, 0xE0DD):
            return position + 8
        if (group, element) != (0xFFFE, 0xE000) or position + 8 + length > len(data):
            return None
        position += 8 + length
    return None


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


def _is_compressed(syntax) -> bool:
    """Encapsulated (compressed) pixel data; decided from the UID, not pydicom's registry, which differs by version."""
    return syntax is not None and str(syntax) in GDCM_TRANSFER_SYNTAXES and str(syntax) not in NATIVE_TRANSFER_SYNTAXES


def _syntax_name(syntax) -> str:
    try:
        name = str(syntax.name)
    except (AttributeError, ValueError):
        name = ""
    return f"{name} ({syntax})" if name and name != str(syntax) else f"transfer syntax '{syntax}'"


def _pixel_error(path, header, error) -> EssNetError:
    path = Path(path)
    reason = itk_reason(str(error).replace(str(path), path.name))
    syntax = _transfer_syntax(header)
    if _is_compressed(syntax):
        return DicomSeriesError(
            f"cannot decode the {_syntax_name(syntax)} pixel data of {path.name} ({reason}): the file is "
            "damaged; export the series again (uncompressed if possible)"
        )
    return InputImageError(
        f"cannot read the pixel data of {path.name} ({reason}): the file is truncated or damaged; "
        "export the series again"
    )


def _decode_pixels(path, header) -> np.ndarray:
    try:
        return np.asarray(header.pixel_array)
    except Exception as error:  # noqa: BLE001 - pydicom's decoders raise many types
        syntax = _transfer_syntax(header)
        if syntax is not None and str(syntax) not in NATIVE_TRANSFER_SYNTAXES:
            raise DicomSeriesError(
                f"{Path(path).name} is compressed as {_syntax_name(syntax)} and cannot be decoded here "
                f"({first_line(error)}): "
                "decompress the series first (e.g. gdcmconv --raw) or install a pydicom decoder (pylibjpeg)"
            ) from None
        raise InputImageError(
            f"cannot read the pixel data of {Path(path).name} ({first_line(error)}): the file is truncated or "
            "damaged; export it again"
        ) from None


# --- messages ------------------------------------------------------------------------------------------
def first_line(error) -> str:
    text = " ".join(str(error).split())
    return (text[:157] + "...") if len(text) > 160 else (text or type(error).__name__)


_ITK_MESSAGE = re.compile(r"(?:itk::ERROR|ITK ERROR|sitk::ERROR|Description):\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?(.*)")


def itk_reason(error) -> str:
    """The informative part of an ITK/SimpleITK exception, on one short line (no source paths or addresses)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    teem = [line for line in lines if line.startswith("[nrrd]")]
    if teem:  # NRRD's own messages go from general to specific: the last one says what is wrong
        return first_line(re.sub(r"^\[nrrd\]\s*(\w+:\s*)?", "", teem[-1]))
    for line in lines:
        match = _ITK_MESSAGE.search(line)
        if match and match.group(1):
            return first_line(match.group(1).replace('"', "'"))
    meaningful = [line for line in lines if not line.startswith(("Exception thrown", "/"))]
    return first_line(meaningful[0] if meaningful else (lines[0] if lines else type(error).__name__))
