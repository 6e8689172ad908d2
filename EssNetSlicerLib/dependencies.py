"""Python packages the modules need, installed only with consent and never at import time.

PyTorch comes from the PyTorch extension (``PyTorchUtils``), which picks the build that matches the GPU driver; it is
never pip-installed directly. The other packages come from the module's ``Resources/requirements.txt`` (``>=``
ranges, never pins; numpy and SimpleITK are Slicer's own and are not listed) through ``slicer.packaging.pip_ensure``
on Slicer 5.12+, else one confirmation and ``slicer.util.pip_install``. With ``interactive=False`` (batch runs) no
dialog is ever opened: missing packages are installed only when ``install=True``, otherwise a one-line error says
what to do.
"""
from __future__ import annotations

import importlib.util
import re
from typing import List

from SlicerEssNet.errors import MissingDependencyError

TORCH_REQUIREMENT = ">=1.13"


def readRequirements(path) -> List[str]:
    """Requirement lines of a requirements file (comments, blank lines and pip options skipped)."""
    lines = []
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                lines.append(line)
    return lines


def _versionTuple(text: str):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def isSatisfied(requirement: str) -> bool:
    """Whether an installed distribution satisfies ``name>=version`` (the only form the modules use)."""
    from importlib import metadata

    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(>=\s*([0-9][0-9A-Za-z.]*))?\s*$", requirement)
    if match is None:
        raise ValueError(f"unsupported requirement '{requirement}': use 'name>=version'")
    name, minimum = match.group(1), match.group(3)
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return minimum is None or _versionTuple(installed) >= _versionTuple(minimum)


def missingRequirements(requirements: List[str]) -> List[str]:
    return [requirement for requirement in requirements if not isSatisfied(requirement)]


def torchAvailable() -> bool:
    return importlib.util.find_spec("torch") is not None


def ensureTorch(interactive: bool = True, install: bool = False) -> None:
    """Make PyTorch importable through the PyTorch extension (asking first unless ``install``); else raise."""
    if torchAvailable():
        return
    try:
        import PyTorchUtils
    except ImportError:
        raise MissingDependencyError(
            "PyTorch is not installed and the PyTorch extension is missing: install 'PyTorch' from the Extensions "
            "Manager, restart Slicer, then run again") from None
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if logic.torchInstalled():
        return
    if not interactive and not install:
        raise MissingDependencyError(
            "PyTorch is not installed: run once with --install-dependencies or open the PyTorch Utils module to "
            "install it, then run again")
    torch = logic.installTorch(askConfirmation=interactive, torchVersionRequirement=TORCH_REQUIREMENT)
    if torch is None:
        raise MissingDependencyError("PyTorch was not installed: install it from the PyTorch Utils module, then run again")


def ensurePackages(requirementsPath, requester: str, interactive: bool = True, install: bool = False) -> None:
    """Install what ``requirementsPath`` lists and is missing: after asking (GUI), or silently when ``install``."""
    import slicer

    requirements = readRequirements(requirementsPath)
    missing = missingRequirements(requirements)
    if not missing:
        return
    if not interactive and not install:
        raise MissingDependencyError(
            f"missing Python packages {', '.join(missing)}: run once with --install-dependencies or install them "
            "from the module's GUI")
    packaging = _slicerPackaging()
    if packaging is not None:
        import inspect

        options = dict(prompt_install=interactive, prompt_restart=interactive, requester=requester)
        if "show_progress" in inspect.signature(packaging.pip_ensure).parameters:
            options["show_progress"] = interactive  # by default a modal progress dialog, and one on failure
        packaging.pip_ensure(missing, **options)
        return
    if interactive and not slicer.util.confirmOkCancelDisplay(
            f"{requester} needs these Python packages: {', '.join(missing)}. Install them now?"):
        raise MissingDependencyError(f"the Python packages {', '.join(missing)} were not installed: they are needed "
                                     "to run the model")
    slicer.util.pip_install(missing)


def _slicerPackaging():
    try:
        import slicer.packaging as packaging  # Slicer 5.12 and later
    except ImportError:
        return None
    return packaging if hasattr(packaging, "pip_ensure") else None


def ensureDependencies(requirementsPath, requester: str, interactive: bool = True, install: bool = False) -> None:
    """Everything a run needs: PyTorch first (it decides the compute backend), then the listed packages."""
    ensureTorch(interactive=interactive, install=install)
    ensurePackages(requirementsPath, requester, interactive=interactive, install=install)
