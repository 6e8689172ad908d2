"""The modules' Qt Designer files: they load with Qt's own QUiLoader (PySide6, offscreen), follow Slicer's
conventions, and have every widget the code uses, bound to parameters that exist, with a fitting widget type."""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

MODULES = ("CT2MRISynthesis", "LiverSegmentation")
SLICER_WIDGETS = {"qMRMLWidget", "qMRMLNodeComboBox", "ctkCollapsibleButton", "qMRMLSegmentationShow3DButton"}


def ui_path(repo_root: Path, module: str) -> Path:
    return repo_root / module / "Resources" / "UI" / f"{module}.ui"


def widgets_in_xml(path: Path) -> dict:
    """name -> (class, {property: text}) for every widget of a .ui file."""
    found = {}
    for widget in ElementTree.parse(path).getroot().iter("widget"):
        properties = {}
        for prop in widget.findall("property"):
            value = next(iter(prop), None)
            properties[prop.get("name")] = (value.text or "") if value is not None and value.tag != "stringlist" \
                else [s.text for s in value] if value is not None else ""
        found[widget.get("name")] = (widget.get("class"), properties)
    return found


def names_used_by_code(repo_root: Path, module: str) -> set:
    """Widget names the code reaches through ``ui.<name>`` (the module's own file plus the shared library)."""
    sources = [repo_root / module / f"{module}.py"] + sorted((repo_root / "EssNetSlicerLib")
                                                             .glob("*.py"))
    used = set()
    for source in sources:
        used |= set(re.findall(r"\bui\.([A-Za-z_]\w*)", source.read_text()))
    return used


def parameter_fields(repo_root: Path, module: str) -> dict:
    """field name -> annotation source of the module's @parameterNodeWrapper class."""
    tree = ast.parse((repo_root / module / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper"
                                                  for d in node.decorator_list):
            return {statement.target.id: ast.unparse(statement.annotation) for statement in node.body
                    if isinstance(statement, ast.AnnAssign)}
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


@pytest.fixture(scope="module")
def qt_loader():
    import slicer_standins

    slicer_standins.install()
    import qt

    return qt.QUiLoader


@pytest.mark.parametrize("module", MODULES)
def test_ui_loads_offscreen_with_every_widget_the_code_uses(repo_root, qt_loader, module):
    from PySide6 import QtCore, QtWidgets

    file = QtCore.QFile(str(ui_path(repo_root, module)))
    assert file.open(QtCore.QIODevice.OpenModeFlag.ReadOnly)
    widget = qt_loader().load(file)  # raises on an unknown class or a connection Qt cannot make
    assert widget is not None
    assert type(widget).__name__ == "qMRMLWidget"
    names = {child.objectName() for child in widget.findChildren(QtCore.QObject)}
    missing = names_used_by_code(repo_root, module) - names
    assert not missing, f"{module}.ui lacks widgets the code uses: {sorted(missing)}"
    # Nothing is hidden behind a class QUiLoader could not build (it would fall back to a plain QWidget).
    for name, (class_name, _) in widgets_in_xml(ui_path(repo_root, module)).items():
        child = widget if name == module else widget.findChild(QtWidgets.QWidget, name)
        assert type(child).__name__ == class_name, f"{name}: built as {type(child).__name__}, not {class_name}"


@pytest.mark.parametrize("module", MODULES)
def test_ui_follows_slicer_conventions(repo_root, module):
    path = ui_path(repo_root, module)
    root = ElementTree.parse(path).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module == root.find("class").text
    widgets = widgets_in_xml(path)
    sections = [name for name, (cls, _) in widgets.items() if cls == "ctkCollapsibleButton"]
    assert len(sections) >= 3, "inputs, outputs and models sit in collapsible sections"
    declared = {custom.find("class").text for custom in root.iter("customwidget")}
    used = {cls for cls, _ in widgets.values()}
    assert used & SLICER_WIDGETS <= declared, f"undeclared custom widgets: {sorted((used & SLICER_WIDGETS) - declared)}"
    assert used - SLICER_WIDGETS <= {"QLabel", "QCheckBox", "QComboBox", "QPushButton", "QProgressBar"}
    # Every MRML widget gets the scene from the top widget, or it stays empty in Slicer.
    connected = {(c.find("sender").text, c.find("signal").text, c.find("receiver").text, c.find("slot").text)
                 for c in root.iter("connection")}
    for name, (cls, _) in widgets.items():
        if cls == "qMRMLNodeComboBox":
            assert (module, "mrmlSceneChanged(vtkMRMLScene*)", name, "setMRMLScene(vtkMRMLScene*)") in connected, name
    assert widgets["applyButton"][0] == "QPushButton"
    assert widgets["applyButton"][1].get("enabled") == "false", "Apply starts disabled until an input is chosen"


@pytest.mark.parametrize("module", MODULES)
def test_parameter_bindings_name_real_fields_with_fitting_widgets(repo_root, module):
    fields = parameter_fields(repo_root, module)
    bound = {}
    for name, (cls, properties) in widgets_in_xml(ui_path(repo_root, module)).items():
        parameter = properties.get("SlicerParameterName")
        if not parameter:
            continue
        assert parameter in fields, f"{name} is bound to '{parameter}', which the parameter node does not have"
        assert parameter not in bound, f"'{parameter}' is bound twice"
        bound[parameter] = name
        annotation = fields[parameter]
        if annotation == "bool":
            assert cls == "QCheckBox", f"{name}: a bool needs a QCheckBox, not {cls}"
        elif annotation.startswith("vtkMRML"):
            assert cls == "qMRMLNodeComboBox", name
            assert properties["nodeTypes"] == [annotation], f"{name} lists {properties['nodeTypes']}"
        elif annotation.startswith("Annotated[str, Choice("):
            assert cls == "QComboBox", name
        else:
            raise AssertionError(f"{parameter}: no GUI connector in Slicer for {annotation} on {cls}")
    # Model names are set by the models panel (its items change at run time); everything else is bound.
    assert set(fields) - set(bound) == {name for name in fields if name.lower().endswith("model")}
