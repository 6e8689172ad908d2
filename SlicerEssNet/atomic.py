"""Write-then-rename, so a crash or an error never leaves a half-written file where a good one should be."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import OutputPathError


@contextlib.contextmanager
def atomic_path(destination, suffix: str | None = None):
    """Yield a temporary path beside ``destination``; rename it into place only if the block succeeds.

    The temporary name keeps the destination's full suffix (``.nii.gz`` too), so writers that choose the format
    from the extension still do the right thing. On any exception the temporary file is removed and the
    destination is left exactly as it was.
    """
    destination = Path(destination)
    folder = destination.parent if str(destination.parent) else Path(".")
    if not folder.is_dir():
        raise OutputPathError(f"output folder {folder} does not exist: create it or choose another output path")
    if destination.is_dir():
        raise OutputPathError(f"output path {destination} is a folder: give a file name")
    if suffix is None:
        suffix = "".join(destination.suffixes[-2:]) if destination.name.endswith(".gz") else destination.suffix
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=f".partial{suffix}", dir=folder)
    except OSError as error:
        raise OutputPathError(
            f"cannot write to {folder} ({error.strerror}): check permissions or choose another output folder"
        ) from None
    os.close(handle)
    temporary = Path(temporary)
    with contextlib.suppress(OSError):  # mkstemp makes it 0600; outputs should be as readable as any new file
        os.chmod(temporary, _new_file_mode())
    try:
        yield temporary
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no other way to read it; restored at once
    os.umask(mask)
    return 0o666 & ~mask
