"""Folder claims: one process at a time, and a failed start removes what it created and nothing else."""

import pytest

from maskcl.claim import LOCK, FolderClaim
from maskcl.errors import MaskclError


def test_a_claim_removes_only_what_its_process_created(tmp_path):
    """A failed start gives up the files, folders and lock file it made, and leaves another's alone."""
    mine = tmp_path / "new" / "deeper" / "run"
    claim = FolderClaim(mine)
    claim.acquire()
    claim.write(mine / "config.json", b"{}")
    claim.mkdir(mine / "models")
    with pytest.raises(MaskclError, match="in use"):
        FolderClaim(mine).acquire()
    (tmp_path / "new" / "other-run").mkdir()  # another process's folder, made meanwhile beside ours
    claim.abandon()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["other-run"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine, not maskcl's")
    claim = FolderClaim(theirs)
    claim.acquire()
    claim.write(theirs / "run.json", b"{}")
    claim.abandon()
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    FolderClaim(theirs).acquire()  # the lock file it removed is made anew


def test_a_lock_on_a_given_up_folders_removed_lock_file_blocks_no_one(tmp_path):
    """A process that opened ``.lock`` just before its holder gave the folder up, and then locked it, holds
    a removed file: the folder can be claimed anew (on a new lock file), and only that claim blocks."""
    import fcntl
    import os

    folder = tmp_path / "run"
    holder = FolderClaim(folder)
    holder.acquire()
    stale = os.open(folder / LOCK, os.O_RDWR)
    holder.abandon()
    assert not folder.exists()
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the late process's lock, on the removed file
    late = FolderClaim(folder)
    late.acquire()
    assert os.fstat(stale).st_ino != (folder / LOCK).stat().st_ino
    with pytest.raises(MaskclError, match="in use"):
        FolderClaim(folder).acquire()
    os.close(stale)


def test_temporary_files_of_a_cut_write_are_removed_when_claimed(tmp_path):
    (tmp_path / "models").mkdir()
    leftovers = [
        tmp_path / ".checkpoint.safetensors.ab12_xyz.tmp",
        tmp_path / "models" / ".task-0.safetensors.q1w2e3r4.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"x" * 100)
    (tmp_path / "mine.tmp").write_text("not maskcl's")
    FolderClaim(tmp_path, subfolders=("models",)).acquire()
    assert not any(path.exists() for path in leftovers) and (tmp_path / "mine.tmp").exists()
