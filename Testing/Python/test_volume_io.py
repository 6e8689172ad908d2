"""read_volume / write_volume on real files and on files damaged or generated at test time."""
from __future__ import annotations

import os
import shutil
import stat
import struct
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from generated_dicom import smooth_volume, write_series, write_slice
from SlicerEssNet.io.chaos import read_chaos_ct
from SlicerEssNet.errors import DicomSeriesError, InputImageError, OutputPathError, VolumeTooLargeError
from SlicerEssNet.volume import Volume
from SlicerEssNet.io.volume_files import (
    list_dicom_series,
    read_dicom_series,
    read_dicom_slices,
    read_volume,
    write_volume,
)

HTJ2K = "1.2.840.10008.1.2.4.201"  # High-Throughput JPEG 2000: no decoder in GDCM or plain pydicom


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and ": " in message
    return message


def same_geometry_exactly(a: Volume, b: Volume) -> bool:
    return (a.spacing == b.spacing and a.origin == b.origin and np.array_equal(a.direction, b.direction)
            and a.array.shape == b.array.shape)


# --- reading real files ------------------------------------------------------------------------------------
@pytest.mark.parametrize("relative", [
    "chaos_mr_t2/mr_t2_01.nii.gz", "btcv_ct/ct_04.nii.gz", "totalseg_examples/example_ct_sm.nii.gz",
    "lits_117/ct.nii.gz", "dcmqi_ct3slice/liver_seg.nrrd",
])
def test_real_files_come_back_with_exactly_simpleitks_geometry(shared_data, relative):
    path = shared_data / relative
    image = sitk.ReadImage(str(path))
    volume = read_volume(path)
    assert volume.spacing == image.GetSpacing() and volume.origin == image.GetOrigin()
    assert tuple(volume.direction.ravel()) == image.GetDirection()
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(image))


def test_gzipped_nifti_is_inflated_once_and_read_exactly_like_simpleitk(tmp_path, monkeypatch):
    """The truncation check inflates the stream; ITK then reads those bytes from a private plain copy."""
    import nibabel

    rng = np.random.default_rng(0)
    data = rng.integers(-300, 300, size=(9, 7, 5)).astype(np.int16)
    c, s = np.cos(0.2), np.sin(0.2)  # an oblique, orthonormal direction with anisotropic voxels
    affine = np.array([[-0.8 * c, 0.9 * s, 0, 20], [0.8 * s, 0.9 * c, 0, -7], [0, 0, 3.0, 11], [0, 0, 0, 1]])
    image = nibabel.Nifti1Image(data, affine)
    image.header.set_slope_inter(0.5, 10.0)  # ITK applies scl_slope/inter: the copy must keep them
    path = tmp_path / "scaled.nii.gz"
    nibabel.save(image, str(path))
    opened = []
    real_set_file_name = sitk.ImageFileReader.SetFileName
    monkeypatch.setattr(sitk.ImageFileReader, "SetFileName",
                        lambda reader, name: opened.append(name) or real_set_file_name(reader, name))
    volume = read_volume(path)
    assert opened[0] == str(path) and opened[-1].endswith("volume.nii")  # header from the file, voxels from the copy
    assert not Path(opened[-1]).exists()  # the private copy is gone once read
    monkeypatch.undo()
    expected = sitk.ReadImage(str(path))
    assert volume.spacing == expected.GetSpacing() and volume.origin == expected.GetOrigin()
    assert tuple(volume.direction.ravel()) == expected.GetDirection()
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(expected))


def test_real_jpeg2000_series_is_decoded_by_gdcm_and_matches_pydicom(shared_data):
    """The TotalSegmentator example series is JPEG 2000 lossless; GDCM decodes it. An independent decoder (pydicom
    through Pillow's OpenJPEG) with the rescale applied by hand must give the same HU, slice for slice."""
    folder = shared_data / "totalseg_examples" / "example_ct_dicom"
    volume = read_volume(folder)
    assert volume.array.shape == (20, 512, 512)
    datasets = sorted((pydicom.dcmread(str(p)) for p in folder.iterdir()),
                      key=lambda d: float(d.ImagePositionPatient[2]))
    assert str(datasets[0].file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.90"
    for k, ds in enumerate(datasets):
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        assert np.array_equal(volume.array[k], hu)
    assert volume.origin == tuple(float(v) for v in datasets[0].ImagePositionPatient)
    assert volume.spacing[2] == pytest.approx(float(datasets[1].ImagePositionPatient[2]) -
                                              float(datasets[0].ImagePositionPatient[2]))
    # one file stands for its series
    single = read_volume(next(folder.iterdir()))
    assert same_geometry_exactly(single, volume) and np.array_equal(single.array, volume.array)


def test_real_three_slice_dicom_and_its_segmentation_share_a_grid(shared_data):
    ct = read_volume(shared_data / "dcmqi_ct3slice" / "ct")
    seg = read_volume(shared_data / "dcmqi_ct3slice" / "liver_seg.nrrd")
    assert ct.array.shape == seg.array.shape == (3, 512, 512)
    assert np.allclose(ct.origin, seg.origin, atol=1e-3) and np.allclose(ct.spacing, seg.spacing, atol=1e-4)
    assert np.median(ct.array[seg.array > 0]) == pytest.approx(100, abs=80)  # liver HU


def test_chaos_folder_is_detected_and_read_in_file_name_order(shared_data):
    sample = shared_data / "chaos_ct_sample"
    ct, _ = read_chaos_ct(sample)
    for path in (sample, sample / "DICOM_anon", sample / "DICOM_anon" / "i0010,0000b.dcm"):
        volume = read_volume(path)
        assert same_geometry_exactly(volume, ct) and np.array_equal(volume.array, ct.array)
    assert ct.direction[2, 2] == -1.0  # first file name is the top slice


# --- writing -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("relative", ["chaos_mr_t2/mr_t2_01.nii.gz", "btcv_ct/ct_04.nii.gz",
                                      "totalseg_examples/example_ct_sm.nii.gz", "dcmqi_ct3slice/liver_seg.nrrd"])
def test_round_trip_keeps_geometry_exactly(shared_data, tmp_path, relative):
    source = read_volume(shared_data / relative)
    extensions = [".nrrd", ".mha"] + ([".nii.gz", ".nii"] if relative.endswith(".nii.gz") else [])
    for extension in extensions:
        written = write_volume(source, tmp_path / f"out{extension}")
        back = read_volume(written)
        assert same_geometry_exactly(back, source), extension
        assert np.array_equal(back.array, source.array) and back.array.dtype == source.array.dtype
    # NIfTI stores geometry as float32: a NRRD's float64 header comes back to float32 precision
    back = read_volume(write_volume(source, tmp_path / "out32.nii.gz"))
    assert np.allclose(back.spacing, source.spacing, rtol=1e-6) and np.allclose(back.origin, source.origin, atol=1e-4)


def test_oblique_generated_volume_round_trips_exactly(tmp_path):
    rotation = np.asarray(sitk.VersorTransform((0.3, 0.5, 0.8), 0.4).GetMatrix()).reshape(3, 3)
    volume = Volume(smooth_volume((3, 4, 5)), (0.7, 1.3, 2.9), (1.1, -2.2, 3.3), rotation)
    back = read_volume(write_volume(volume, tmp_path / "oblique.mha"))
    assert same_geometry_exactly(back, volume) and np.array_equal(back.array, volume.array)
    # NRRD stores spacing x direction as one vector per axis: splitting it again costs the last bit
    back = read_volume(write_volume(volume, tmp_path / "oblique.nrrd"))
    assert np.array_equal(back.array, volume.array) and back.same_geometry(volume, atol=1e-12)


def test_written_files_are_readable_like_any_new_file(tmp_path):
    path = write_volume(Volume(np.eye(3, dtype=bool)[np.newaxis]), tmp_path / "mask.nrrd")
    assert read_volume(path).array.dtype == np.uint8
    mode = stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_write_errors_are_output_path_errors_and_leave_nothing(tmp_path, monkeypatch):
    volume = Volume(smooth_volume((2, 3, 4)))
    with pytest.raises(OutputPathError, match="name the output") as caught:
        write_volume(volume, tmp_path / "out.png")
    one_line(caught)
    with pytest.raises(OutputPathError, match="does not exist"):
        write_volume(volume, tmp_path / "missing" / "out.nii.gz")
    (tmp_path / "folder.nrrd").mkdir()
    with pytest.raises(OutputPathError, match="is a folder"):
        write_volume(volume, tmp_path / "folder.nrrd")

    def failing_writer(image, path, *args):
        Path(path).write_bytes(b"half a volume")
        raise RuntimeError("ITK ERROR: NrrdImageIO(0x1): disk full")

    monkeypatch.setattr(sitk, "WriteImage", failing_writer)
    with pytest.raises(OutputPathError, match="disk full") as caught:
        write_volume(volume, tmp_path / "out.nrrd")
    one_line(caught)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.nrrd"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, which nobody can create files in")
def test_folder_nobody_can_write_to_is_an_output_path_error():
    with pytest.raises(OutputPathError, match="cannot write to /proc") as caught:
        write_volume(Volume(smooth_volume((2, 3, 4))), Path("/proc/essnet-output.nii.gz"))
    one_line(caught)


def test_a_folder_that_is_a_file_is_an_output_path_error(tmp_path):
    """Nobody can write below a file, root included (permission bits do not bind root, so a read-only folder
    would prove nothing when the tests run as root)."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    for target in (blocker / "out.nii.gz", blocker / "deeper" / "out.nrrd"):
        with pytest.raises(OutputPathError) as caught:
            write_volume(Volume(smooth_volume((2, 3, 4))), target)
        assert one_line(caught) == (f"output folder {target.parent} does not exist: create it or choose another "
                                    "output path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert blocker.read_text() == "a file, not a folder"


# --- what read_volume refuses ------------------------------------------------------------------------------
def test_missing_empty_and_non_image_inputs(tmp_path):
    with pytest.raises(InputImageError, match="does not exist") as caught:
        read_volume(tmp_path / "nothing.nii.gz")
    one_line(caught)
    (tmp_path / "empty.nii.gz").touch()
    with pytest.raises(InputImageError, match="empty"):
        read_volume(tmp_path / "empty.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputImageError, match="not a supported image"):
        read_volume(tmp_path / "notes.txt")
    (tmp_path / "text.nii.gz").write_text("hello\n" * 100)
    with pytest.raises(InputImageError, match="cannot read text.nii.gz") as caught:
        read_volume(tmp_path / "text.nii.gz")
    one_line(caught)


def test_truncated_and_corrupt_files(shared_data, tmp_path):
    """ITK alone would read a truncated NIfTI without complaint (zeros where voxels are missing)."""
    source = shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"
    compressed = source.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(compressed[: len(compressed) // 2])
    write_volume(read_volume(source), tmp_path / "plain.nii")
    raw = (tmp_path / "plain.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[: len(raw) - 1000])
    (tmp_path / "header_only.nii").write_bytes(raw[:352])
    write_volume(read_volume(shared_data / "dcmqi_ct3slice" / "liver_seg.nrrd"), tmp_path / "seg.nrrd")
    nrrd = (tmp_path / "seg.nrrd").read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(nrrd[: len(nrrd) - 200])
    (tmp_path / "bad_header.nrrd").write_bytes(nrrd.replace(b"sizes:", b"sizes: x", 1))
    for name, message in [("cut.nii.gz", "damaged gzip"), ("cut.nii", "truncated"), ("header_only.nii", "truncated"),
                          ("cut.nrrd", "cannot read the voxels"), ("bad_header.nrrd", "cannot read bad_header")]:
        with pytest.raises(InputImageError, match=message) as caught:
            read_volume(tmp_path / name)
        one_line(caught)


@pytest.mark.parametrize("inflater", ["isal", "gzip"])
def test_either_inflater_reads_the_same_voxels_and_refuses_damage(shared_data, tmp_path, monkeypatch, inflater):
    """ISA-L (when installed) and the standard gzip give identical volumes, and both refuse a cut or a corrupted
    stream with the same one-line error."""
    if inflater == "gzip":
        monkeypatch.setitem(sys.modules, "isal", None)  # as on a machine without it
    else:
        pytest.importorskip("isal", reason="isal is not installed (requirements.txt lists it)")
    source = shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"
    compressed = source.read_bytes()
    volume = read_volume(source)
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(sitk.ReadImage(str(source))))
    (tmp_path / "cut.nii.gz").write_bytes(compressed[: len(compressed) - 5000])
    flipped = bytearray(compressed)
    flipped[len(flipped) // 2] ^= 0xFF  # a bit error inside the deflate data: bad codes or a CRC mismatch
    (tmp_path / "flipped.nii.gz").write_bytes(bytes(flipped))
    for name in ("cut.nii.gz", "flipped.nii.gz"):
        with pytest.raises(InputImageError, match="damaged gzip") as caught:
            read_volume(tmp_path / name)
        one_line(caught)


@pytest.mark.parametrize("inflater", ["isal", "gzip"])
def test_a_valid_gzip_stream_around_a_short_nifti_is_refused_as_truncated(tmp_path, monkeypatch, inflater):
    """Cutting the compressed bytes is caught by gzip itself; a NIfTI cut short and then gzipped is a valid
    stream, so only counting the inflated voxel bytes against the header finds it (ITK would read zeros)."""
    import gzip

    if inflater == "gzip":
        monkeypatch.setitem(sys.modules, "isal", None)
    else:
        pytest.importorskip("isal", reason="isal is not installed (requirements.txt lists it)")
    volume = Volume(smooth_volume((4, 16, 20)), (0.8, 0.7, 2.5), (1.0, 2.0, 3.0))  # 2560 voxel bytes
    raw = write_volume(volume, tmp_path / "whole.nii").read_bytes()
    expected = len(raw)
    assert expected == 352 + volume.array.size * volume.array.itemsize
    for missing in (1, volume.array.itemsize, 1000, expected - 352):
        short = tmp_path / f"short{missing}.nii.gz"
        short.write_bytes(gzip.compress(raw[:-missing]))
        assert gzip.decompress(short.read_bytes()) == raw[:-missing]  # the stream itself is sound
        with pytest.raises(InputImageError) as caught:
            read_volume(short)
        assert one_line(caught) == (f"{short.name} is truncated ({expected - missing} of the {expected} bytes its "
                                    "header promises): export it again")
    whole = tmp_path / "whole_again.nii.gz"
    whole.write_bytes(gzip.compress(raw))
    back = read_volume(whole)  # the control: the same stream, not cut, reads back exactly
    assert np.array_equal(back.array, volume.array) and back.array.dtype == volume.array.dtype


def test_a_plain_nii_beside_the_gz_does_not_shadow_it(tmp_path):
    """NIfTI's reader opens 'x.nii' when asked for 'x.nii.gz' if both exist; read_volume must not."""
    write_volume(Volume(np.zeros((2, 3, 4), dtype=np.int16) + np.arange(4, dtype=np.int16)), tmp_path / "x.nii")
    wanted = Volume(np.full((2, 3, 4), 9, dtype=np.int16) + np.arange(4, dtype=np.int16), (2.0, 2.0, 2.0))
    write_volume(wanted, tmp_path / "x.nii.gz")
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "x.nii.gz"))).max() == 3  # the trap is real
    back = read_volume(tmp_path / "x.nii.gz")
    assert np.array_equal(back.array, wanted.array) and back.spacing == (2.0, 2.0, 2.0)


def test_2d_image_is_one_slice(tmp_path):
    image = sitk.GetImageFromArray(np.arange(20, dtype=np.int16).reshape(4, 5))
    image.SetSpacing((0.5, 0.25))
    image.SetOrigin((3.0, 4.0))
    sitk.WriteImage(image, str(tmp_path / "flat.nrrd"))
    volume = read_volume(tmp_path / "flat.nrrd")
    assert volume.array.shape == (1, 4, 5) and volume.spacing == (0.5, 0.25, 1.0)
    assert volume.origin == (3.0, 4.0, 0.0) and np.array_equal(volume.direction, np.eye(3))


def test_4d_vector_and_oversized_images_are_refused_before_reading(tmp_path, shared_data):
    sitk.WriteImage(sitk.Image([4, 5, 6, 2], sitk.sitkInt16), str(tmp_path / "series.nii.gz"))
    with pytest.raises(InputImageError, match="4D"):
        read_volume(tmp_path / "series.nii.gz")
    sitk.WriteImage(sitk.Image([4, 5, 6], sitk.sitkVectorFloat32, 3), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputImageError, match="3 components"):
        read_volume(tmp_path / "rgb.nrrd")
    # a detached header promising 238 GiB over a 100-byte data file: refused from the header alone
    (tmp_path / "tiny.raw").write_bytes(bytes(100))
    (tmp_path / "huge.nhdr").write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 4000 4000 4000\n"
                                        "spacings: 1 1 1\nendian: little\nencoding: raw\ndata file: tiny.raw\n")
    with pytest.raises(VolumeTooLargeError, match="4000 x 4000 x 4000") as caught:
        read_volume(tmp_path / "huge.nhdr")
    one_line(caught)
    with pytest.raises(VolumeTooLargeError, match="limit given"):
        read_volume(shared_data / "lits_117" / "ct.nii.gz", max_bytes=1 << 20)


# --- DICOM series problems -----------------------------------------------------------------------------------
def test_generated_series_reads_with_rescale_and_geometry(tmp_path):
    pixels = smooth_volume((5, 12, 10))
    write_series(tmp_path / "s", pixels, z0=-100.0, step=2.5, spacing=(0.8, 0.7))
    volume = read_volume(tmp_path / "s")
    assert np.array_equal(volume.array, pixels.astype(np.int32) - 1024) and volume.array.dtype == np.int16
    assert volume.spacing == (0.7, 0.8, 2.5) and volume.origin == (-50.0, -60.0, -100.0)


def test_mixed_series_says_which_and_how_to_choose(tmp_path):
    folder = tmp_path / "mixed"
    write_series(folder, smooth_volume((5, 12, 10)), series_uid="1.2.3.1")
    write_series(folder, smooth_volume((3, 12, 10), seed=1), series_uid="1.2.3.2", names=["b0.dcm", "b1.dcm", "b2.dcm"])
    with pytest.raises(DicomSeriesError, match="holds 2 DICOM series") as caught:
        read_volume(folder)
    message = one_line(caught)
    assert "'1.2.3.1' 5 files" in message and "'1.2.3.2' 3 files" in message and "series_uid=" in message
    assert read_dicom_series(folder, series_uid="1.2.3.2").array.shape == (3, 12, 10)
    assert read_volume(folder / "b1.dcm").array.shape == (3, 12, 10)
    assert read_volume(folder / "slice004.dcm").array.shape == (5, 12, 10)
    assert sorted(uid for uid, _ in list_dicom_series(folder)) == ["1.2.3.1", "1.2.3.2"]
    with pytest.raises(DicomSeriesError, match="no series '9.9'"):
        read_dicom_series(folder, series_uid="9.9")


@pytest.mark.parametrize("positions, message", [
    ([0.0, 2.5, 7.5, 10.0, 12.5], "about 1 slice\\(s\\) missing"),
    ([0.0, 2.5, 5.0, 6.0, 8.5], "not uniform"),
    ([0.0, 2.5, 2.5, 5.0, 7.5], "same position"),
])
def test_gaps_uneven_spacing_and_duplicates(tmp_path, positions, message):
    pixels = smooth_volume((5, 8, 8))
    for n, z in enumerate(positions):
        write_slice(tmp_path / f"s{n}.dcm", pixels[n], (0.0, 0.0, z))
    with pytest.raises(DicomSeriesError, match=message) as caught:
        read_volume(tmp_path)
    one_line(caught)


def test_gantry_tilt_is_refused(tmp_path):
    pixels = smooth_volume((4, 8, 8))
    for n in range(4):
        write_slice(tmp_path / f"s{n}.dcm", pixels[n], (0.0, 0.8 * n, 2.5 * n))
    with pytest.raises(DicomSeriesError, match="gantry tilt"):
        read_volume(tmp_path)


def test_files_without_pixel_data(tmp_path):
    folder = tmp_path / "series"
    write_series(folder, smooth_volume((5, 8, 8)))
    dataset = pydicom.dcmread(str(folder / "slice002.dcm"))
    del dataset.PixelData
    dataset.save_as(str(folder / "slice002.dcm"))
    with pytest.raises(DicomSeriesError, match="slice002.dcm belongs to the series but has no pixel data") as caught:
        read_volume(folder)
    one_line(caught)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(folder / "slice002.dcm", alone / "x.dcm")
    with pytest.raises(DicomSeriesError, match="no pixel data"):
        read_volume(alone)
    with pytest.raises(DicomSeriesError, match="no pixel data"):
        read_volume(alone / "x.dcm")


def _recompress_as_htj2k(folder: Path) -> None:
    """Encapsulated pixel data labelled HTJ2K. Written as JPEG 2000, then relabelled byte by byte (pydicom 2.x
    does not know the HTJ2K UIDs and would refuse to write them)."""
    from pydicom.encaps import encapsulate

    jpeg2000 = b"1.2.840.10008.1.2.4.90"
    for path in folder.iterdir():
        dataset = pydicom.dcmread(str(path))
        dataset.file_meta.TransferSyntaxUID = jpeg2000.decode()
        dataset.PixelData = encapsulate([bytes(range(256)) * 2])
        dataset["PixelData"].VR = "OB"
        dataset["PixelData"].is_undefined_length = True
        dataset.save_as(str(path))
        data = path.read_bytes()
        element = b"\x02\x00\x10\x00UI" + struct.pack("<H", len(jpeg2000)) + jpeg2000
        assert data.count(element) == 1
        new_value = HTJ2K.encode() + b"\x00"  # UIDs are padded to even length with a NUL
        data = data.replace(element, b"\x02\x00\x10\x00UI" + struct.pack("<H", len(new_value)) + new_value)
        group_length = struct.unpack_from("<I", data, 140)[0]  # (0002,0000) UL right after the preamble
        path.write_bytes(data[:140] + struct.pack("<I", group_length + len(new_value) - len(jpeg2000)) + data[144:])


def test_compressed_pixel_data_without_a_decoder(tmp_path):
    folder = tmp_path / "htj2k"
    write_series(folder, smooth_volume((3, 8, 8)))
    _recompress_as_htj2k(folder)
    with pytest.raises(DicomSeriesError, match="installed decoders cannot read") as caught:
        read_volume(folder)
    assert HTJ2K in one_line(caught)
    # the pydicom path (CHAOS layouts) says the same
    with pytest.raises(DicomSeriesError, match="cannot be decoded"):
        read_dicom_slices(sorted(folder.iterdir()))


def test_truncated_and_non_dicom_files_in_a_series_folder(tmp_path):
    folder = tmp_path / "series"
    write_series(folder, smooth_volume((4, 8, 8)))
    data = (folder / "slice003.dcm").read_bytes()
    (folder / "slice003.dcm").write_bytes(data[: len(data) - 40])
    (folder / "notes.txt").write_text("a file that is not DICOM")
    with pytest.raises(InputImageError) as caught:  # GDCM leaves the damaged last slice out, or fails on it
        volume = read_volume(folder)
        assert volume.array.shape[0] == 3  # pragma: no cover - only if it were silently accepted
    one_line(caught)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomSeriesError, match="no DICOM series"):
        read_volume(tmp_path / "empty")
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)
    with pytest.raises(InputImageError, match="bad.dcm") as caught:
        read_volume(tmp_path / "bad.dcm")
    one_line(caught)


def test_dicom_memory_limit_is_checked_before_decoding(tmp_path):
    write_series(tmp_path / "s", smooth_volume((4, 16, 16)))
    with pytest.raises(VolumeTooLargeError, match="4 slices of 16 x 16"):
        read_dicom_series(tmp_path / "s", max_bytes=1000)
    with pytest.raises(VolumeTooLargeError):
        read_dicom_slices(sorted((tmp_path / "s").iterdir()), max_bytes=1000)


@pytest.mark.parametrize("extension, field", [(".nhdr", "space directions"), (".nhdr", "spacings"),
                                              (".mhd", "ElementSpacing")])
def test_a_header_without_spacing_is_refused_not_read_as_1_mm(tmp_path, extension, field):
    image = sitk.GetImageFromArray(smooth_volume((4, 16, 16)).astype(np.int16))
    image.SetSpacing((0.7, 0.7, 3.0))
    stated = tmp_path / f"stated{extension}"
    sitk.WriteImage(image, str(stated))
    assert read_volume(stated).spacing == pytest.approx((0.7, 0.7, 3.0))
    lines = stated.read_text().splitlines()
    if field == "spacings":  # the older NRRD way of stating it, without a frame
        lines = [("spacings: 0.7 0.7 3" if line.startswith("space directions") else line) for line in lines
                 if not line.startswith(("space:", "space origin"))]
        (tmp_path / f"older{extension}").write_text("\n".join(lines) + "\n")
        assert read_volume(tmp_path / f"older{extension}").spacing == pytest.approx((0.7, 0.7, 3.0))
        lines = [line for line in lines if not line.startswith("spacings")]
    else:
        lines = [line for line in lines if not line.lower().startswith((field.lower(), "space:", "space origin"))]
    bare = tmp_path / f"bare{extension}"
    bare.write_text("\n".join(lines) + "\n")
    assert sitk.ReadImage(str(bare)).GetSpacing() == (1.0, 1.0, 1.0)  # what ITK alone would make of it
    with pytest.raises(InputImageError, match="states no voxel spacing") as error:
        read_volume(bare)
    assert "\n" not in str(error.value) and field.split()[0] in str(error.value)
