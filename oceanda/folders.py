"""Output folders a verb builds whole (train, demo, sample-data, reproduce): all of it or nothing.

Why a module: each of these verbs fills a folder over minutes; a failure, Ctrl-C or SIGKILL must never
leave a half-filled folder at the final path, and ``--overwrite`` must keep the old folder until the
new one is complete. :func:`oceanda.io.atomic_dir` does the building (a ``.NAME.<pid>.<random>.tmp``
sibling renamed into place); :func:`build` adds what replacing a whole folder needs on top of it: an
existing folder is replaced only when it is one the same verb wrote (so ``--out ~ --overwrite`` can
never delete a home folder), and never the current folder or one holding it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from oceanda import io
from oceanda.errors import OutputExistsError


def final_path(path: io.PathLike) -> Path:
    """``path`` as a folder name (``.``, ``..`` or ``a/..`` made absolute: a folder is renamed by its own name)."""
    path = Path(path)
    return Path(os.path.abspath(path)) if path.name in ("", ".", "..") else path


def _holds_cwd(path: Path) -> bool:
    try:
        here, there = Path.cwd().resolve(), path.resolve()
    except OSError:
        return False
    return here == there or there in here.parents


def check_replaceable(path: io.PathLike, overwrite: bool, marker: str, verb: str) -> Path:
    """Refuse an existing folder ``verb`` may not replace; return ``path`` (see :func:`final_path`).

    An existing non-empty folder is refused without ``overwrite`` (by :func:`oceanda.io.atomic_dir`),
    and with it unless it holds ``marker`` (the file ``verb`` writes last); the current folder, or
    one holding it, is never replaced (the shell would be left in a deleted folder).

    Parameters
    ----------
    path : the final folder
    overwrite : an existing folder may be replaced
    marker : the file that shows ``verb`` wrote the folder (e.g. ``config.json`` of a model)
    verb : the command, for the message (e.g. ``oceanda train``)

    Returns
    -------
    pathlib.Path
    """
    path = final_path(path)
    if not os.path.isdir(path) or os.path.islink(path):
        return path  # absent, a file or a link: atomic_dir says what is wrong with it
    if _holds_cwd(path):
        raise OutputExistsError(f"{path}: is the current folder or holds it; expected a new folder for the output "
                                "(e.g. --out run1)")
    with contextlib.suppress(OSError):
        if overwrite and any(path.iterdir()) and not (path / marker).is_file():
            raise OutputExistsError(f"{path}: exists and holds no {marker}, so it is not a folder {verb} wrote; "
                                    "expected a new, empty or earlier output folder (--overwrite replaces only "
                                    "those; remove it yourself if it is to go)")
    return path


@contextlib.contextmanager
def build(path: io.PathLike, overwrite: bool, marker: str, verb: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole (else nothing changes).

    Parameters
    ----------
    path : the final folder
    overwrite : replace an existing folder ``verb`` wrote (:func:`check_replaceable`)
    marker, verb : as :func:`check_replaceable`

    Yields
    ------
    pathlib.Path: the temporary folder to fill
    """
    path = check_replaceable(path, overwrite, marker, verb)
    with io.atomic_dir(path, overwrite=overwrite) as tmp:
        yield tmp


def moved(paths: dict[str, Path], tmp: Path, final: Path) -> dict[str, Path]:
    """Paths under the temporary folder ``tmp`` as they are under ``final`` once it is renamed into place.

    Parameters
    ----------
    paths : {name: path under ``tmp``}
    tmp, final : the temporary and the final folder

    Returns
    -------
    dict {name: path under ``final``}
    """
    out = {}
    for k, p in paths.items():
        p = Path(p)
        out[k] = final / p.relative_to(tmp) if p.is_relative_to(tmp) else p
    return out
