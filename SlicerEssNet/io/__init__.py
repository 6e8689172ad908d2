"""Volume input and output: image files, DICOM series and the CHAOS challenge layout.

The files import downward only: ``dicom_series`` (one DICOM series to a ``Volume``) and ``chaos`` (CHAOS folders,
read through ``dicom_series``) sit below ``volume_files`` (any path a user gives: image file, DICOM folder or file,
CHAOS patient), which is what the rest of the core calls."""
from __future__ import annotations
