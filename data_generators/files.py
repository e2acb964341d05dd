"""Writing result files atomically, and checking output folders up front.

Imports only the standard library, so that every package (the model floor
included) can write files without importing OpenCV or pandas.
"""

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside `path`; rename it onto `path` on success.

    A kill or an exception while writing never leaves a half-written file at
    `path`: readers see either the old file or the complete new one.

    Args:
        path: the file to write. Its folder is created if missing.

    Yields:
        A temporary file name in the same folder with the same suffix (Keras
        and matplotlib choose the format from the suffix).

    Example:
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "hello.txt")
    >>> with atomic_output(target) as tmp:
    ...     _ = open(tmp, "w").write("hi")
    >>> open(target).read()
    'hi'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"cannot write {path!r}: {folder!r} is a file, not a folder")
    os.makedirs(folder, exist_ok=True)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is an existing folder")
    base = os.path.basename(path)
    # Keep the full suffix (".weights.h5", ".keras") so writers that pick the
    # format from the name still do.
    suffix = base[base.index("."):] if "." in base else ""
    handle, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(handle)
    os.remove(tmp)  # writers such as Keras refuse to overwrite without asking
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output_folder(path, name="out"):
    """Raise NotADirectoryError if `path` cannot be made a folder: it, or a folder above it, is a file.

    Checked before any work starts, so that a run does not fail at its first
    write, hours in.

    Args:
        path: the output folder (it need not exist yet).
        name: how the error names the argument.

    Returns:
        `path` as a string.

    Example:
    >>> import tempfile
    >>> file = tempfile.NamedTemporaryFile()
    >>> check_output_folder(file.name + "/run")
    Traceback (most recent call last):
    ...
    NotADirectoryError: out=... lies under ..., which is a file, not a folder
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{name}={path!r} is an existing file, not a folder")
    above = os.path.dirname(os.path.abspath(path))
    while above and not os.path.exists(above):
        above = os.path.dirname(above)
    if above and not os.path.isdir(above):
        raise NotADirectoryError(f"{name}={path!r} lies under {above!r}, which is a file, not a folder")
    return path


def check_run_folder(path, *, overwrite=False, resume=False, name="out"):
    """Raise unless `path` can take a run's outputs: `check_output_folder`, and new or empty.

    A non-empty folder is accepted with `overwrite` (it will be replaced) or
    `resume` (the run goes on in it).

    Returns:
        `path` as a string.
    """
    path = check_output_folder(path, name)
    if os.path.isdir(path) and os.listdir(path) and not (overwrite or resume):
        raise FileExistsError(
            f"{name}={path!r} exists and is not empty; pass --overwrite (overwrite=True) to replace it, "
            "--resume (resume=True) to go on with the run in it, or another folder"
        )
    return path


@contextlib.contextmanager
def staged_folder(path, *, overwrite=False, resume=False, name="out"):
    """Yield a folder to write a run's outputs in; it becomes `path` only if the run succeeds.

    The outputs go to a temporary folder beside `path`, renamed onto `path`
    at the end, so a failed or interrupted run leaves `path` as it was. An
    existing non-empty `path` is refused unless `overwrite` (it is replaced,
    at the end, by the new outputs) or `resume` (the run goes on inside it:
    resumable state must survive an interruption, so it is written in place).

    Args:
        path: the output folder.
        overwrite: replace an existing non-empty folder.
        resume: write in `path` itself (created if missing).
        name: how errors name the argument.

    Yields:
        The folder to write in.

    Example:
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "run")
    >>> with staged_folder(target) as folder:
    ...     _ = open(os.path.join(folder, "a.txt"), "w").write("done")
    >>> os.listdir(target)
    ['a.txt']
    """
    path = check_run_folder(path, overwrite=overwrite, resume=resume, name=name)
    if resume:
        os.makedirs(path, exist_ok=True)
        yield path
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(path))}.", suffix=".partial", dir=parent)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if os.path.isdir(path):
        # Renamed aside, not deleted, until the new outputs are in place.
        previous = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(path))}.", suffix=".old", dir=parent)
        os.replace(path, os.path.join(previous, "outputs"))
        os.replace(staging, path)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(staging, path)
