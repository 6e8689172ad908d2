"""The house has no import circles: every module of the core, the Slicer-side libraries and Training imports
downward only, lazy imports inside functions included (a circle hidden in a function is still a circle)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("SlicerEssNet", "Training", "EssNetSlicerLib", "EssNetBatch", "CT2MRISynthesis", "LiverSegmentation")


def project_modules(root: Path = REPO) -> dict:
    """Dotted module name -> file, for every Python file of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "Testing" in parts:  # a module's own tests folder (Slicer's layout)
                continue
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict) -> set:
    """The project modules that module ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # "from package import module" imports the module; "from module import name" the module itself
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        # A module importing its own package (the package's __init__) is not a step down or up.
        found.update(t for t in targets if t in modules and t != name and not name.startswith(t + "."))
    return found


def import_circles(modules: dict) -> list:
    """The strongly connected groups of more than one module in the import graph (Tarjan), each sorted."""
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_module_imports_its_way_back_to_itself():
    circles = import_circles(project_modules())
    assert circles == [], "import circles: " + "; ".join(" <-> ".join(group) for group in circles)


def test_the_check_finds_a_circle_hidden_in_a_function(tmp_path):
    package = tmp_path / "SlicerEssNet"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "reader.py").write_text("from .layout import find\n")
    (package / "layout.py").write_text("def find():\n    from .reader import read\n")
    (package / "below.py").write_text("import SlicerEssNet.reader\n")
    assert import_circles(project_modules(tmp_path)) == [["SlicerEssNet.layout", "SlicerEssNet.reader"]]


@pytest.mark.parametrize("module", ["SlicerEssNet.io.volume_files", "SlicerEssNet.io.chaos"])
def test_volume_io_reads_downward(module):
    modules = project_modules()
    imported = imported_modules(module, modules[module], modules)
    assert "SlicerEssNet.io.dicom_series" in imported and "SlicerEssNet.pipeline" not in imported


TRAINING_FLOORS = ("data", "stages", "study")  # bottom to top


def test_training_floors_import_downward_only():
    """``Training/data`` (cohorts, slices, augmentation) stands on nothing of Training, ``stages`` (networks'
    training loops, losses, checkpoints) on data, ``study`` (study, jobs, reports, presets, shipping) on both."""
    modules = project_modules()
    upward = []
    for name, path in modules.items():
        parts = name.split(".")
        if parts[0] != "Training" or len(parts) < 3 or parts[1] not in TRAINING_FLOORS:
            continue
        level = TRAINING_FLOORS.index(parts[1])
        for target in imported_modules(name, path, modules):
            target_parts = target.split(".")
            if target_parts[0] == "Training" and (len(target_parts) < 3 or target_parts[1] not in TRAINING_FLOORS):
                upward.append(f"{name} -> {target}")  # the command line sits above every floor
            elif target_parts[0] == "Training" and TRAINING_FLOORS.index(target_parts[1]) > level:
                upward.append(f"{name} -> {target}")
    assert upward == []
    assert {name.split(".")[1] for name in modules if name.startswith("Training.") and name.count(".") >= 2} \
        == set(TRAINING_FLOORS)
