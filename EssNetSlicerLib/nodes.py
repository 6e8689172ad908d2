"""MRML volume nodes <-> the core's ``Volume``, and putting results into the scene.

Results always take the INPUT node's IJK-to-RAS matrix verbatim (not a matrix recomputed from a file header), so a
synthetic MR or a liver mask overlays its source exactly. Inputs under a parent transform are refused rather than
silently hardened: hardening resamples non-linear transforms, and a result placed under the same transform would
hide that the model saw the untransformed voxels. The message says how to harden it deliberately.
"""
from __future__ import annotations

import numpy as np

import slicer
from SlicerEssNet.errors import InputImageError


def ijkToRasArray(volumeNode) -> np.ndarray:
    """The node's IJK-to-RAS matrix as a 4x4 numpy array."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def checkInputVolumeNode(volumeNode, what: str = "input volume") -> None:
    """Raise ``InputImageError`` (one line: the problem and what to do) unless the node can be processed."""
    if volumeNode is None:
        raise InputImageError(f"no {what} is selected: choose a volume in the module's input selector")
    name = volumeNode.GetName()
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputImageError(
            f"'{name}' is a {volumeNode.GetClassName()}, not a scalar image: choose a CT or MR scalar volume")
    imageData = volumeNode.GetImageData()
    if imageData is None or imageData.GetPointData().GetScalars() is None:
        raise InputImageError(f"'{name}' has no voxels loaded: load the image data before running")
    if imageData.GetNumberOfScalarComponents() != 1:
        raise InputImageError(f"'{name}' has {imageData.GetNumberOfScalarComponents()} components per voxel: "
                              "choose a single-component (grey-scale) volume")
    transform = volumeNode.GetParentTransformNode()
    if transform is not None:
        raise InputImageError(
            f"'{name}' is under the transform '{transform.GetName()}': harden it first (Data module, right-click "
            "the volume > Harden transform) or remove the transform, then run again")


def volumeFromNode(volumeNode):
    """The node's voxels and geometry as a core ``Volume`` (a copy: the job never sees the live VTK buffer)."""
    from SlicerEssNet.volume import Volume

    checkInputVolumeNode(volumeNode)
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    return Volume.from_ijk_to_ras(array, ijkToRasArray(volumeNode))


def checkResultFits(array: np.ndarray, referenceNode, what: str) -> None:
    """A result must have exactly the reference's voxel grid before it may take the reference's geometry."""
    expected = tuple(reversed(referenceNode.GetImageData().GetDimensions()))
    if tuple(array.shape) != expected:
        raise InputImageError(
            f"the {what} has {array.shape} voxels but '{referenceNode.GetName()}' has {expected}: the input changed "
            "while the job ran; run it again")


def setVolumeFromArray(volumeNode, array: np.ndarray, referenceNode) -> None:
    """Fill ``volumeNode`` with ``array`` on exactly ``referenceNode``'s IJK-to-RAS geometry."""
    checkResultFits(array, referenceNode, "result")
    volumeNode.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRasArray(referenceNode)))
    slicer.util.updateVolumeFromArray(volumeNode, array)


def addScalarVolumeNode(array: np.ndarray, referenceNode, name: str):
    """A new scalar volume node holding ``array`` on ``referenceNode``'s geometry, with display nodes."""
    checkResultFits(array, referenceNode, "result")
    node = slicer.util.addVolumeFromArray(array, ijkToRasArray(referenceNode), name=name,
                                          nodeClassName="vtkMRMLScalarVolumeNode")
    return node


def showWithAutoWindowLevel(volumeNode) -> None:
    """Auto window/level on the volume's display node (created when missing)."""
    if volumeNode.GetDisplayNode() is None:
        volumeNode.CreateDefaultDisplayNodes()
    displayNode = volumeNode.GetDisplayNode()
    if displayNode is not None:
        displayNode.SetAutoWindowLevel(True)


def placeBeside(node, referenceNode) -> None:
    """Put ``node`` under the same subject hierarchy parent (study, patient or folder) as ``referenceNode``."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    if hierarchy is None:
        return
    referenceItem = hierarchy.GetItemByDataNode(referenceNode)
    parent = hierarchy.GetItemParent(referenceItem) if referenceItem else hierarchy.GetSceneItemID()
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def nodeIds() -> set:
    scene = slicer.mrmlScene
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


class SceneChanges:
    """Context manager: nodes added to the scene inside the block are removed again if the block raises.

    Results are put into the scene in one go after a job succeeded; if that step itself fails half-way, the scene
    goes back to exactly what it was (no half-built output node). ``undo()`` removes the added nodes on demand
    (the batch script clears each case this way, display and storage nodes included).
    """

    def __enter__(self):
        self._before = nodeIds()
        return self

    def __exit__(self, excType, exc, traceback):
        if excType is not None:
            self.undo()
        return False

    def undo(self) -> None:
        scene = slicer.mrmlScene
        added = [scene.GetNodeByID(nodeId) for nodeId in nodeIds() - self._before]
        for node in added:
            # Singletons (the subject hierarchy node, ...) are shared scene infrastructure, not results.
            if node is not None and node.GetScene() is not None and not node.GetSingletonTag():
                scene.RemoveNode(node)
