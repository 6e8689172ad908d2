"""The extension's CMake files: every file of a module is packaged, the metadata meets the Extensions Index rules.

A file missing from a module's CMakeLists is silently left out of the extension package and only fails in the
user's Slicer (ciroraggio/SlicerModalityConverter#3, "No module named 'ModalityConverterLib'").
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

MODULES = ("CT2MRISynthesis", "LiverSegmentation")
# Extensions Index scripts/check_description_files.py ACCEPTED_EXTENSION_CATEGORIES (the ones that could fit).
ACCEPTED_CATEGORIES = {"Segmentation", "Image Synthesis", "Quantification", "Registration", "Filtering"}


def cmake_text(path: Path) -> str:
    """CMake source without comments (a "#" after whitespace or at the start of a line; URLs keep theirs)."""
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in path.read_text().splitlines())


def cmake_list(text: str, variable: str, substitutions: dict) -> list:
    match = re.search(r"set\(\s*" + re.escape(variable) + r"\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    items = match.group(1).split()
    for name, value in substitutions.items():
        items = [item.replace("${" + name + "}", value) for item in items]
    return items


def cmake_set(text: str, variable: str) -> str:
    match = re.search(r'set\(\s*' + re.escape(variable) + r'\s+"([^"]*)"\s*\)', text)
    assert match, f'set({variable} "...") not found'
    return match.group(1)


def files_under(folder: Path) -> set:
    """Every file a module folder holds, relative to it, except build files and caches."""
    found = set()
    for path in folder.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            found.add(path.relative_to(folder).as_posix())
    return found


@pytest.mark.parametrize("module", MODULES)
def test_every_module_file_is_listed_and_every_listed_file_exists(repo_root, module):
    folder = repo_root / module
    text = cmake_text(folder / "CMakeLists.txt")
    assert re.search(r"set\(\s*MODULE_NAME\s+" + module + r"\s*\)", text)
    listed = cmake_list(text, "MODULE_PYTHON_SCRIPTS", {"MODULE_NAME": module}) + \
        cmake_list(text, "MODULE_PYTHON_RESOURCES", {"MODULE_NAME": module})
    assert len(listed) == len(set(listed)), "a file is listed twice"
    for item in listed:
        assert (folder / item).is_file(), f"{module}/CMakeLists.txt lists {item}, which does not exist"
    cmake_files = {name for name in files_under(folder) if Path(name).name == "CMakeLists.txt"}
    unlisted = files_under(folder) - set(listed) - cmake_files
    assert not unlisted, f"{module}/CMakeLists.txt does not list {sorted(unlisted)}: they would not be packaged"


@pytest.mark.parametrize("module", MODULES)
def test_module_uses_the_scripted_module_macros(repo_root, module):
    text = cmake_text(repo_root / module / "CMakeLists.txt")
    call = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.S).group(1)
    assert "WITH_GENERIC_TESTS" in call.split()
    assert "NAME ${MODULE_NAME}" in " ".join(call.split())
    assert re.search(r"if\(BUILD_TESTING\).*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)"
                     r".*add_subdirectory\(Testing\)", text, re.S)
    assert "add_subdirectory(Python)" in cmake_text(repo_root / module / "Testing" / "CMakeLists.txt")


@pytest.mark.parametrize("module", MODULES)
def test_testing_scripts_named_in_cmake_exist(repo_root, module):
    folder = repo_root / module / "Testing" / "Python"
    text = cmake_text(folder / "CMakeLists.txt")
    scripts = re.findall(r"SCRIPT\s+(\S+)", text)
    assert scripts, "the module's Testing/Python registers no test"
    for script in scripts:
        path = Path(script.replace("${CMAKE_CURRENT_SOURCE_DIR}", str(folder)))
        assert path.resolve().is_file(), f"{script} does not exist"


def test_root_cmake_meets_the_extensions_index_rules(repo_root):
    text = cmake_text(repo_root / "CMakeLists.txt")
    project = re.search(r"project\((\w+)\)", text).group(1)
    # Index Tier 1: the extension name does not start with "Slicer"; the repository is named Slicer + name.
    assert not project.lower().startswith("slicer")
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert len(cmake_set(text, variable)) > 10, variable
    assert cmake_set(text, "EXTENSION_CATEGORY") in ACCEPTED_CATEGORIES
    assert "PyTorch" in cmake_set(text, "EXTENSION_DEPENDS").split()
    for variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake_set(text, variable).split():
            match = re.match(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(.+\.(png|jpg))$", url)
            assert match, f"{variable} {url} is not a raw image URL"
            assert (repo_root / match.group(1)).is_file(), f"{variable} points to {match.group(1)}, not in the repo"
    subdirectories = re.findall(r"add_subdirectory\((\w+)\)", text)
    assert subdirectories[0] == "SlicerEssNet", "the core must be configured before the modules that import it"
    assert set(MODULES) <= set(subdirectories)
    assert text.index("find_package(Slicer REQUIRED)") < text.index("include(${Slicer_USE_FILE})") \
        < text.index("add_subdirectory(") < text.index("include(${Slicer_EXTENSION_GENERATE_CONFIG})") \
        < text.index("include(${Slicer_EXTENSION_CPACK})")


def test_extension_icon_is_128_pixels(repo_root):
    import numpy as np
    from PIL import Image

    for module in MODULES:
        with Image.open(repo_root / module / "Resources" / "Icons" / f"{module}.png") as icon:
            assert icon.size == (128, 128)
            colours = np.unique(np.asarray(icon.convert("RGB")).reshape(-1, 3), axis=0)
            assert len(colours) > 20, "the icon is a real picture, not a flat fill"


def test_core_package_patterns_cover_every_core_file(repo_root):
    """SlicerEssNet/CMakeLists.txt globs the core; any file it would miss must fail here, not in Slicer."""
    folder = repo_root / "SlicerEssNet"
    text = cmake_text(folder / "CMakeLists.txt")
    patterns = [p.replace("${CMAKE_CURRENT_SOURCE_DIR}/", "") for p in
                re.findall(r"(\$\{CMAKE_CURRENT_SOURCE_DIR\}/\S+)", text)]
    assert "*.py" in patterns
    assert "ctkMacroCompilePythonScript(" in text
    assert re.search(r"DESTINATION_DIR\s+\$\{CMAKE_BINARY_DIR\}/\$\{Slicer_QTSCRIPTEDMODULES_LIB_DIR\}/"
                     r"\$\{ESSNET_CORE_NAME\}", text)
    missed = []
    for name in sorted(files_under(folder)):
        if name == "CMakeLists.txt":
            continue
        # GLOB_RECURSE matches at any depth, as fnmatch's "*" (which crosses "/") does.
        if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
            missed.append(name)
    assert not missed, f"SlicerEssNet/CMakeLists.txt would not package {missed}"


def test_shared_slicer_plumbing_and_batch_script_are_packaged_apart_from_both_modules(repo_root):
    """EssNetSlicerLib (globbed, like the core) and EssNetBatch have CMake lists of their own, configured after the
    core; no module folder holds, or lists, the other's code."""
    root = cmake_text(repo_root / "CMakeLists.txt")
    subdirectories = re.findall(r"add_subdirectory\((\w+)\)", root)
    assert subdirectories.index("SlicerEssNet") < subdirectories.index("EssNetSlicerLib")
    assert "EssNetBatch" in subdirectories
    library = cmake_text(repo_root / "EssNetSlicerLib" / "CMakeLists.txt")
    assert "${CMAKE_CURRENT_SOURCE_DIR}/*.py" in library and "ctkMacroCompilePythonScript(" in library
    assert {path.name for path in (repo_root / "EssNetSlicerLib").iterdir() if path.suffix == ".py"} >= {
        "__init__.py", "runs.py", "processing.py", "sample_data.py"}
    assert not [p for p in (repo_root / "EssNetSlicerLib").rglob("*") if p.is_dir() and p.name != "__pycache__"]
    batch = cmake_text(repo_root / "EssNetBatch" / "CMakeLists.txt")
    assert 'SCRIPTS "EssNetBatch.py"' in batch and "SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/EssNetBatch.py" in batch
    for module in MODULES:
        assert not (repo_root / module / "EssNetSlicerLib").exists() and not (repo_root / module / "Scripts").exists()
        assert "EssNetSlicerLib/" not in cmake_text(repo_root / module / "CMakeLists.txt")


def test_licence_is_apache_2(repo_root):
    text = (repo_root / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
