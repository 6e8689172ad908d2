"""The liver as a Slicer segmentation: one segment "Liver" with standard terminology, colour and reference geometry.

The terminology string is the serialised form Slicer's terminology logic writes (context~category~type~modifier~
anatomic context~region~region modifier, each code ``scheme^value^meaning``), the one TotalSegmentator uses for the
liver, so DICOM SEG export and the Segment Editor's terminology box show "Liver" with its SNOMED CT code.
"""
from __future__ import annotations

import numpy as np

import slicer

LIVER_SEGMENT_NAME = "Liver"
LIVER_COLOR = (221 / 255.0, 130 / 255.0, 101 / 255.0)
LIVER_TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list"
    "~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^"
    "~Anatomic codes - DICOM master list~^^~^^"
)
LIVER_LABEL = 1


def setLiverSegment(labels: np.ndarray, referenceVolumeNode, segmentationNode=None, name: str = ""):
    """Write ``labels == 1`` as the "Liver" segment of ``segmentationNode`` (a new node when None); return the node.

    An existing "Liver" segment is replaced; other segments of a chosen node are kept. The segmentation's reference
    geometry is the reference volume (needed for DICOM SEG export and for editing on the same grid).
    """
    from .nodes import checkResultFits

    checkResultFits(labels, referenceVolumeNode, "liver mask")
    if segmentationNode is None:
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode", name or f"{referenceVolumeNode.GetName()} liver")
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    segmentationNode.SetNodeReferenceID(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole(), referenceVolumeNode.GetID())

    segmentation = segmentationNode.GetSegmentation()
    previous = segmentation.GetSegmentIdBySegmentName(LIVER_SEGMENT_NAME)
    if previous:
        segmentation.RemoveSegment(previous)
    segmentId = segmentation.AddEmptySegment(LIVER_SEGMENT_NAME, LIVER_SEGMENT_NAME, LIVER_COLOR)
    if not segmentId:
        raise RuntimeError("Slicer could not add a segment: the Segmentations module is not initialised")
    segment = segmentation.GetSegment(segmentId)
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), LIVER_TERMINOLOGY)
    mask = (np.asarray(labels) == LIVER_LABEL).astype(np.uint8)
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, referenceVolumeNode)
    # The import may rename or recolour from the temporary labelmap's colour table: restore ours.
    segment.SetName(LIVER_SEGMENT_NAME)
    segment.SetColor(*LIVER_COLOR)
    return segmentationNode


def segmentTerminology(segment) -> str:
    """The serialised terminology entry of a segment ("" when it has none)."""
    import vtk

    value = vtk.reference("")
    return value.get() if segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), value) else ""


def liverSegmentId(segmentationNode) -> str:
    segmentId = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(LIVER_SEGMENT_NAME)
    if not segmentId:
        raise KeyError(f"'{segmentationNode.GetName()}' has no segment named {LIVER_SEGMENT_NAME}")
    return segmentId


def segmentVolumeMl(segmentationNode, segmentId=None, referenceVolumeNode=None) -> float:
    """Volume of a segment (default: "Liver") in millilitres, counted on the reference volume's grid."""
    segmentId = segmentId or liverSegmentId(segmentationNode)
    if referenceVolumeNode is None:
        referenceVolumeNode = segmentationNode.GetNodeReference(
            slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode)
    voxelMm3 = float(np.prod(referenceVolumeNode.GetSpacing()))
    return float(np.count_nonzero(mask)) * voxelMm3 / 1000.0
