"""Output locations named on the command line, checked and created before any work is done (a simulation, a sweep
or a study should not run for an hour and then fail to write its results)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from sim.errors import FleetsimError


def _blocker(path: Path) -> Path | None:
    """The first existing part of ``path`` (``path`` itself or an ancestor) that is not a folder, if any."""
    for part in (*reversed(path.parents), path):
        if part.exists() and not part.is_dir():
            return part
    return None


def out_folder(path: str | Path, option: str) -> Path:
    """Create the output folder ``path`` (given as ``option``) now, or raise a one-line error naming it.

    Parameters
    ----------
    path
        The folder; it may exist already.
    option
        How the user gave it, e.g. ``--out``.
    """
    folder = Path(path)
    blocker = _blocker(folder)
    if blocker == folder:
        raise FleetsimError(f"{option} {path}: exists and is not a folder")
    if blocker is not None:
        raise FleetsimError(f"{option} {path}: cannot create the folder: {blocker} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FleetsimError(f"{option} {path}: cannot create the folder ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FleetsimError(f"{option} {path}: the folder is not writable")
    return folder


def out_file(path: str | Path, option: str) -> Path:
    """Check that the file ``path`` (given as ``option``) can be written, creating its folder now."""
    file = Path(path)
    if file.is_dir():
        raise FleetsimError(f"{option} {path}: is a folder; give a file name")
    blocker = _blocker(file.parent)
    if blocker is not None:
        raise FleetsimError(f"{option} {path}: cannot create its folder: {blocker} is a file")
    out_folder(file.parent, option)
    if file.exists() and not os.access(file, os.W_OK):
        raise FleetsimError(f"{option} {path}: the file is not writable")
    return file


def _folder_name(name: str) -> str:
    if name in ("", ".", "..") or any(c in name for c in "/\\") or not name.isprintable():
        raise ValueError(f"{name!r}: names the default results folder, results/<name>: give a non-empty name without "
                         "'/' or '\\' (and not '.' or '..')")
    return name


#: The name of an experiment, study or plan: the folder its results go to unless ``--out`` says otherwise, so it
#: must stay one folder inside ``results/``.
FolderName = Annotated[str, AfterValidator(_folder_name)]
