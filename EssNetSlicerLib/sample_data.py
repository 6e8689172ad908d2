"""The bundled example CT and MR (TotalSegmentator's, Apache-2.0; ``SlicerEssNet/examples``) in the Sample Data
module, so both modules can be tried in two clicks. Registered once, by CT2MRISynthesis, when Slicer has started."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

CATEGORY = "EssNet"


def exampleSources(iconsFolder) -> list:
    """``(sampleName, file path, node name, thumbnail path)`` of each bundled example; the thumbnails are the
    registering module's (``iconsFolder``: its Resources/Icons, beside its .py in the source tree and installed)."""
    from SlicerEssNet.example import EXAMPLE_CT, EXAMPLE_MR

    icons = Path(iconsFolder)
    return [("EssNet example CT", EXAMPLE_CT, "ExampleCT", icons / "ExampleCT.png"),
            ("EssNet example MR", EXAMPLE_MR, "ExampleMR", icons / "ExampleMR.png")]


def registerSampleData(iconsFolder) -> None:
    """Register the examples with local file URIs and SHA256 checksums (Sample Data copies them into its cache)."""
    import SampleData

    for sampleName, path, nodeName, thumbnail in exampleSources(iconsFolder):
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=CATEGORY, sampleName=sampleName, uris=Path(path).as_uri(), fileNames=os.path.basename(path),
            nodeNames=nodeName, thumbnailFileName=str(thumbnail), loadFileType="VolumeFile",
            checksums=f"SHA256:{digest}")
