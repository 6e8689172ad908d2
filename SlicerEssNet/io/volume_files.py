"""Reading and writing volumes with exactly the geometry their headers state.

Files (NIfTI, NRRD/NHDR, MHA/MHD) and DICOM series are read by SimpleITK, so a ``Volume`` carries precisely the
spacing, origin and direction SimpleITK reports (DICOM folders are first sorted out and checked in
``dicom_series.py``); CHAOS challenge folders go through ``chaos.py`` because their slice order is defined by file
name. Every failure is an ``InputImageError`` (or a subclass) with one line that names the problem, and everything
is checked from the headers before pixel data is read, so a 4D file or one larger than memory is refused without
allocating it. ``write_volume`` writes atomically.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputImageError, OutputPathError, VolumeTooLargeError
from ..validation import check_image_header
from ..volume import Volume, volume_from_image
from . import chaos
from .dicom_series import (
    first_line,
    has_dicom_preamble,
    itk_reason,
    list_dicom_series,
    read_dicom_file,
    read_dicom_header,
    read_dicom_series,
    read_dicom_slices,
)

__all__ = ["read_volume", "write_volume", "read_dicom_series", "list_dicom_series", "read_dicom_slices",
           "read_dicom_header", "volume_from_image", "file_extension", "IMAGE_EXTENSIONS", "WRITE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".mha")


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
    if extension == ".dcm" or (extension not in IMAGE_EXTENSIONS and has_dicom_preamble(path)):
        return _read_dicom_file(path, max_bytes)
    if extension not in IMAGE_EXTENSIONS:
        raise InputImageError(
            f"{path.name} is not a supported image (extension '{extension or 'none'}'): give a NIfTI (.nii, "
            ".nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) file or a DICOM folder"
        )
    return _read_image_file(path, max_bytes)


def check_writable(path) -> Path:
    """Refuse, before any work, an output ``write_volume`` would refuse at the end: an unknown format, a folder
    that does not exist or cannot be written, a path that is a folder."""
    import os

    path = Path(path).expanduser()
    extension = file_extension(path)
    if extension not in WRITE_EXTENSIONS:
        raise OutputPathError(
            f"cannot write '{extension or path.name}' files: name the output .nii.gz, .nii, .nrrd or .mha"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputPathError(f"output folder {folder} does not exist: create it or choose another output path")
    if path.is_dir():
        raise OutputPathError(f"output path {path} is a folder: give a file name")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write to {folder} (permission denied): check permissions or choose another "
                              "output folder")
    return path


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
        raise InputImageError(f"the volume cannot be written ({itk_reason(error)}): check its voxel type") from None
    # NRRD and MetaImage compress with gzip like Slicer does; a plain .nii is uncompressed by its name.
    compress = extension in (".nrrd", ".mha")
    with atomic_path(path) as temporary:
        try:
            sitk.WriteImage(image, str(temporary), compress)
        except RuntimeError as error:
            raise OutputPathError(
                f"cannot write {path} ({itk_reason(error)}): check free disk space and permissions"
            ) from None
    return path


def file_extension(path) -> str:
    """The lower-case extension, ``.nii.gz`` counted as one."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


# --- files ------------------------------------------------------------------------------------------------
# The reader each extension means. Left to choose, ITK takes any reader that accepts the bytes: a PNG mask
# named .nii.gz would come back as a 2D "volume".
_IMAGE_IOS = {".nii": "NiftiImageIO", ".nii.gz": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO",
              ".mha": "MetaImageIO", ".mhd": "MetaImageIO"}
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
    nifti = _nifti_header(path, name) if file_extension(path) in (".nii", ".nii.gz") else None
    if file_extension(path) in _SPACING_KEYS:
        _check_spacing_is_stated(path, name)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(_IMAGE_IOS[file_extension(path)])
    try:
        reader.ReadImageInformation()
        pixel_type = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        size, spacing = reader.GetSize(), reader.GetSpacing()
        components = reader.GetNumberOfComponents()
    except RuntimeError as error:
        raise InputImageError(
            f"cannot read {name} as an image ({itk_reason(error)}): check that it is a complete, valid "
            f"{file_extension(path)} file"
        ) from None
    if len(size) < 2:
        raise InputImageError(f"{name} is a {len(size)}D image: give a 2D or 3D image")
    if "complex" in pixel_type:
        raise InputImageError(f"{name} has complex voxels: save the magnitude image instead")
    component_bytes = _BYTES_PER_COMPONENT.get(pixel_type.replace("vector of ", ""), 8)
    check_image_header(name, size, components, component_bytes, spacing, max_bytes)
    with contextlib.ExitStack() as scratch:
        if nifti is not None:
            inflated = _check_nifti_voxels(path, name, *nifti, scratch=scratch)
            if inflated is not None:  # the check inflated the stream once already: ITK reads those bytes
                reader.SetFileName(str(inflated))
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise InputImageError(
                f"cannot read the voxels of {name} ({itk_reason(error)}): the file is truncated or corrupt; "
                "export it again"
            ) from None
        except MemoryError:
            raise VolumeTooLargeError(f"{name} does not fit in memory: crop it or free memory") from None
    return volume_from_image(image)


# The header fields that state the voxel size; without them ITK's NRRD and MetaImage readers take 1 mm silently.
_NRRD_SPACING = ("spacings", "space directions")
_META_SPACING = ("elementspacing", "elementsize")
_SPACING_NAMES = {"spacings": "spacings", "space directions": "space directions", "elementspacing": "ElementSpacing",
                  "elementsize": "ElementSize"}
_SPACING_KEYS = {".nrrd": _NRRD_SPACING, ".nhdr": _NRRD_SPACING, ".mha": _META_SPACING, ".mhd": _META_SPACING}


def _check_spacing_is_stated(path: Path, name: str) -> None:
    """Refuse a NRRD or MetaImage header that states no voxel size, rather than read every voxel as 1 mm."""
    wanted = _SPACING_KEYS[file_extension(path)]
    meta = wanted is _META_SPACING
    keys = set()
    try:
        with open(path, "rb") as stream:
            for raw in stream.read(65536).split(b"\n"):
                line = raw.decode("latin-1").strip()
                if not line and not meta:
                    break  # the NRRD header ends at its first blank line
                key = line.split("=" if meta else ":", 1)[0].strip().lower()
                keys.add(key)
                if meta and key == "elementdatafile":
                    break  # the last field of a MetaImage header
    except OSError as error:
        raise InputImageError(f"cannot open {name} ({error.strerror}): check the path and permissions") from None
    if not keys & set(wanted):
        raise InputImageError(
            f"{name} states no voxel spacing (its reader would take 1 mm without a word): add the spacing to the "
            f"header ({' or '.join(_SPACING_NAMES[key] for key in wanted)}), for example by saving it again from the scanner's export or Slicer"
        )


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


def _nifti_header(path: Path, name: str) -> tuple:
    """``(header, compressed)`` of a NIfTI file, read with nibabel and checked before ITK opens the file.

    ITK's NIfTI library turns a zero voxel size into 1 mm without a word, reads a zero-length axis as a 2D image,
    and prints its complaints about a file that is not NIfTI straight to stderr (a second line under the CLI's
    one). Whether the bytes are gzipped is read from the file, not the name, as ITK does.
    """
    import gzip

    import nibabel

    not_nifti = "check that it is a complete, valid NIfTI file (not another format renamed)"
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as stream:
            block = stream.read(nibabel.Nifti2Header.sizeof_hdr)
    except (OSError, EOFError, zlib.error) as error:
        raise InputImageError(f"cannot read {name} as an image ({first_line(error)}): {not_nifti}") from None
    kind = next((k for k in (nibabel.Nifti1Header, nibabel.Nifti2Header) if k.may_contain_header(block)), None)
    if kind is None:
        raise InputImageError(f"cannot read {name} as an image (no NIfTI header): {not_nifti}")
    header = kind(block[: kind.sizeof_hdr], check=False)  # check=True would log nibabel's own fixes to stderr
    n_dims = int(header["dim"][0])
    sizes = tuple(int(size) for size in header["dim"][1: n_dims + 1])
    if 1 <= n_dims <= 7 and any(size <= 0 for size in sizes):
        raise InputImageError(f"{name} has no voxels along some axis (size {sizes}): check the file")
    spacing = tuple(float(value) for value in header["pixdim"][1: min(n_dims, 3) + 1])
    if any(value == 0 for value in spacing):
        raise InputImageError(
            f"{name} has voxel spacing {spacing}: spacing must be positive and finite; fix the image header"
        )
    return header, compressed


def _gzip_reader() -> tuple:
    """``(open, errors)``: ISA-L's ``isal.igzip`` where installed (inflates a CHAOS volume in 6 ms instead of 13, a
    tenth of the shipped U-Net's time on it), else the standard ``gzip``; ``errors`` is what a damaged stream raises
    (ISA-L adds its own error class)."""
    try:
        from isal import igzip
        from isal.isal_zlib import error as isal_error
    except ImportError:
        import gzip

        return gzip.open, (OSError, EOFError, zlib.error)
    return igzip.open, (OSError, EOFError, zlib.error, isal_error)


def _check_nifti_voxels(path: Path, name: str, header, compressed: bool, scratch):
    """What ITK's NIfTI reader hides: it reads a truncated file without complaint (the missing voxels come back
    as zeros) and silently turns NaN and infinite voxels into 0. So count the bytes, and scan float voxels.

    A gzipped file has to be inflated for that; the inflated bytes are also kept as a plain ``.nii`` in a private
    temporary folder (removed when ``scratch``, an ExitStack, closes) and its path returned, so ITK need not
    inflate them again (half the reading time of a CHAOS volume). ``None`` where there is no copy: ITK reads the original.
    """
    try:
        dtype = header.get_data_dtype()
        offset = int(header.get_data_offset())
        expected = offset + int(np.prod(header.get_data_shape(), dtype=np.float64)) * int(dtype.itemsize)
    except Exception:  # noqa: BLE001 - nibabel could not size what ITK read: ITK's reading stands on its own
        return None
    floating = dtype.kind == "f"
    single_file = bytes(header["magic"]).rstrip(b"\x00") in (b"n+1", b"n+2")  # not an .hdr/.img pair's header
    copy = _InflatedCopy(scratch) if compressed and single_file else None
    if not compressed and not floating:
        actual, n_nan, n_inf = path.stat().st_size, 0, 0
    else:
        open_gzip, gzip_errors = _gzip_reader()
        try:
            with (open_gzip if compressed else open)(path, "rb") as stream:
                actual, n_nan, n_inf = _scan_voxel_bytes(stream, offset, expected, dtype if floating else None,
                                                         copy)
        except gzip_errors as error:
            raise InputImageError(
                f"{name} is a damaged gzip stream ({first_line(error)}): the file is truncated or corrupt; "
                "export it again"
            ) from None
    if actual < expected:
        raise InputImageError(
            f"{name} is truncated ({actual} of the {expected} bytes its header promises): export it again"
        )
    if n_nan or n_inf:
        raise InputImageError(
            f"{name} contains {n_nan} NaN and {n_inf} infinite voxels: replace them (e.g. with the background "
            "value) before processing"
        )
    return copy.finish() if copy is not None else None


class _InflatedCopy:
    """A plain ``.nii`` written chunk by chunk; if the disk refuses (full, read-only), it is simply not used."""

    def __init__(self, scratch):
        self.path, self.file = None, None
        try:
            folder = scratch.enter_context(tempfile.TemporaryDirectory(prefix="slicer-essnet-"))
            self.path = Path(folder) / "volume.nii"
            self.file = scratch.enter_context(open(self.path, "wb"))
        except OSError:
            self.file = None

    def write(self, chunk: bytes) -> None:
        if self.file is None:
            return
        try:
            self.file.write(chunk)
        except OSError:
            self.file = None

    def finish(self):
        if self.file is None:
            return None
        try:
            self.file.close()
        except OSError:
            return None
        return self.path


def _scan_voxel_bytes(stream, offset: int, end: int, dtype, copy=None) -> tuple:
    """``(bytes read up to end, NaN count, inf count)``, streamed in chunks; values are counted only with a dtype.
    Every chunk also goes to ``copy`` (an ``_InflatedCopy``) when given."""
    done = n_nan = n_inf = 0
    pending = b""
    while done < end:
        chunk = stream.read(min(1 << 22, end - done))
        if not chunk:
            break
        if copy is not None:
            copy.write(chunk)
        if dtype is not None and done + len(chunk) > offset:
            data = pending + chunk[max(0, offset - done):]
            usable = len(data) - len(data) % dtype.itemsize
            values = np.frombuffer(data[:usable], dtype=dtype)
            n_nan += int(np.count_nonzero(np.isnan(values)))
            n_inf += int(np.count_nonzero(np.isinf(values)))
            pending = data[usable:]
        done += len(chunk)
    return done, n_nan, n_inf


def _read_folder(folder: Path, max_bytes: int | None) -> Volume:
    dicom_folder = chaos.find_chaos_dicom_folder(folder)
    if dicom_folder is not None:
        return chaos.read_chaos_image(dicom_folder, max_bytes=max_bytes)
    return read_dicom_series(folder, max_bytes=max_bytes)


def _read_dicom_file(path: Path, max_bytes: int | None) -> Volume:
    if chaos.is_chaos_dicom_folder(path.parent):
        return chaos.read_chaos_image(path.parent, max_bytes=max_bytes)
    return read_dicom_file(path, max_bytes=max_bytes)
