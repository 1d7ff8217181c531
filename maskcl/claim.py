"""Claims on folders: one process at a time writes into a folder, and a failed start removes exactly what
it created there.

``FolderClaim(path).acquire()`` makes the folder (and missing parents) and locks its ``.lock`` with
``flock``, which the system drops when the process dies, so a killed process never leaves a stale claim.
A second process gets a one-line error and touches nothing. The claim records each file and folder its
process creates (:meth:`FolderClaim.write`, :meth:`FolderClaim.mkdir`, :meth:`FolderClaim.note`), and
:meth:`FolderClaim.abandon` removes those and nothing else. Acquiring also removes the temporary files
that an atomic write (:func:`maskcl.checkpoint.write_atomic`) killed half-way left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from maskcl.checkpoint import TEMPORARY_NAME, write_atomic
from maskcl.errors import MaskclError

__all__ = ["LOCK", "FolderClaim"]

LOCK = ".lock"


class FolderClaim:
    """An exclusive claim on a folder while one process writes into it, and the record of what that process
    created there, so that a failed start removes exactly that (see the module docstring).

    ``acquire`` makes the folder (and missing parents) and locks ``.lock`` with ``flock``. It then checks
    that ``.lock`` is still the file it locked: a process that gives its folder up removes the lock file
    while holding it, and a process that had opened the old file retries on the new one. Where there is no
    ``flock`` (Windows) the folder is made but not locked.
    """

    def __init__(self, path: Path, subfolders: tuple[str, ...] = ()) -> None:
        self.path = path
        self.subfolders = subfolders  # where temporary files are looked for, besides the folder
        self._fd: int | None = None
        self._created: list[Path] = []

    def acquire(self) -> None:
        """Claim the folder, or a one-line error: in use by another process, or not a folder we can make."""
        for _ in range(8):
            created: list[Path] = []
            lock = self.path / LOCK
            try:
                created += _make_folders(self.path)
                try:
                    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                    created.append(lock)
                except FileExistsError:
                    fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:  # another process gave the folder up meanwhile: again
                continue
            except OSError as err:
                raise MaskclError(f"cannot create {self.path}: {err.strerror or err}") from None
            if not _flock(fd):
                os.close(fd)
                raise MaskclError(f"{self.path} is in use by another maskcl run; wait for it to stop")
            if _same_file(fd, lock):
                self._fd, self._created = fd, created
                self.remove_temporary_files()
                return
            os.close(fd)
        raise MaskclError(f"cannot claim {self.path}: other processes keep removing it")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove_temporary_files(self) -> None:
        """Remove the temporary files an atomic write killed half-way left in the folder and its
        ``subfolders``."""
        for folder in (self.path, *(self.path / name for name in self.subfolders)):
            if folder.is_dir():
                for entry in folder.iterdir():
                    if TEMPORARY_NAME.fullmatch(entry.name) and entry.is_file():
                        entry.unlink(missing_ok=True)

    def note(self, path: Path) -> None:
        """``path`` is about to be made by this process (call before making it)."""
        if not path.exists():
            self._created.append(path)

    def write(self, path: Path, data: bytes) -> None:
        """Write ``path`` atomically, noting it when it is new."""
        self.note(path)
        write_atomic(path, data)

    def mkdir(self, path: Path) -> None:
        self.note(path)
        try:
            path.mkdir(exist_ok=True)
        except OSError as err:
            raise MaskclError(f"cannot create {path}: {err.strerror or err}") from None

    def abandon(self) -> None:
        """Remove what this process created, newest first (the lock file while still holding it, then the
        folder and parents it made, when empty), and release the claim."""
        lock = self.path / LOCK
        for path in reversed(self._created):
            if path == lock or not _inside(path, self.path):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if lock in self._created:
            lock.unlink(missing_ok=True)
        self.release()
        for path in reversed(self._created):
            if path != lock and not _inside(path, self.path):
                with contextlib.suppress(OSError):  # not empty (another process's files), or gone
                    path.rmdir()
        self._created = []


def _inside(path: Path, folder: Path) -> bool:
    return path != folder and folder in path.parents


def _make_folders(path: Path) -> list[Path]:
    """Make ``path`` and its missing parents; the ones this call made, outermost first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    made = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
            made.append(folder)
        except FileExistsError:
            pass
    if not path.is_dir():
        raise MaskclError(f"cannot create {path}: it exists and is not a folder")
    return made


def _flock(fd: int) -> bool:
    """Lock ``fd`` exclusively without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: nothing is claimed
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
