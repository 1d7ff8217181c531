"""Checkpoint files that are safe to load from strangers and never half-written.

A checkpoint is one safetensors file: every tensor of a nested state (model, optimizer, method, random
generators) stored as a named tensor, and the rest of the state (numbers, strings, the nesting itself)
as JSON in the file's metadata. Loading parses a JSON header and raw tensor bytes: nothing in the file
is executed (no pickle).

Writes are atomic: the bytes go to a temporary file in the same folder, are flushed to the disk
(``fsync``), and the temporary file is renamed over the target; a crash or a full disk at any moment
leaves either the previous file or the new one, both loadable.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from maskcl.errors import MaskclError

FORMAT = "maskcl-checkpoint"
FORMAT_VERSION = 7
"""Version of the checkpoint and run-folder format; a newer one is refused with a one-line error. 2: model
files refer to earlier task files for unchanged tensors, HyperMask keeps one mask buffer per task. 3: a
run's config holds its own method's options only, and ``num_tasks`` for ``tasks``. 4: ``task_inference``
names a task predictor, and a checkpoint keeps its statistics. 5: the learning-rate schedule and gradient
clipping in the config, each task's initial accuracy in checkpoints. 6: the patience schedule and early
stopping in the config, their counters in a checkpoint's position. 7: augmentation, DataLoader workers
and pretrained weights in the config (this maskcl reads versions 1-6 too,
:func:`maskcl.config.upgrade_config`)."""

TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
"""The names of :func:`write_atomic`'s temporary files, ``.NAME.XXXXXXXX.tmp`` (a kill mid-write leaves
one)."""
_TENSOR, _DICT = "__tensor__", "__dict__"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def check_version(version: Any, damaged: str, written: str | Path, name: str) -> None:
    """A format ``version`` this maskcl reads, or a one-line error: ``damaged`` when it is not an integer,
    and "``written`` was written by a newer maskcl (``name`` N; ...)" when it is newer than
    :data:`FORMAT_VERSION`."""
    if not isinstance(version, int) or isinstance(version, bool):
        raise MaskclError(damaged)
    if version > FORMAT_VERSION:
        raise MaskclError(
            f"{written} was written by a newer maskcl ({name} {version}; this one reads {FORMAT_VERSION}): "
            "upgrade maskcl"
        )


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file, fsync, rename, fsync of the folder.

    On any failure (disk full, no permission) the temporary file is removed, ``path`` keeps its previous
    content, and a :class:`MaskclError` names the file and the reason.
    """
    path = Path(path)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise MaskclError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        os.fchmod(descriptor, 0o666 & ~_UMASK)  # mkstemp's file is private; give it the usual mode
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as err:
        Path(temporary).unlink(missing_ok=True)
        raise MaskclError(f"cannot write {path}: {err.strerror or err}") from None
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_json(path: str | Path, value: Any) -> None:
    """``value`` as indented JSON, written atomically."""
    write_atomic(path, (json.dumps(value, indent=2) + "\n").encode())


def parse_json(text: str | bytes, source: str | Path) -> Any:
    """The JSON value of ``text`` (from ``source``), or a one-line error naming ``source``: not JSON, or
    nested deeper than Python's recursion limit (a hostile file must not end in a traceback)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise MaskclError(f"{source} is nested too deeply to be a maskcl file") from None
    except ValueError as err:
        raise MaskclError(f"{source} is not valid JSON ({err})") from None


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes: equal digests, equal tensors bit for bit."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    if flat.numel():
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def check_like(saved: Any, expected: Any, where: str) -> None:
    """``saved`` has the structure of ``expected``: the same dict keys, list lengths, scalar types, and
    tensors of the same dtype and shape (a one-line error naming the first difference at ``where``)."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(saved, torch.Tensor):
            raise MaskclError(f"{where} should be a tensor, got {type(saved).__name__}")
        if saved.dtype != expected.dtype or saved.shape != expected.shape:
            found, wanted = f"{saved.dtype} {tuple(saved.shape)}", f"{expected.dtype} {tuple(expected.shape)}"
            raise MaskclError(f"{where} is {found}, expected {wanted}")
    elif isinstance(expected, dict):
        if not isinstance(saved, dict) or set(saved) != set(expected):
            raise MaskclError(f"{where} does not hold the expected entries {sorted(map(str, expected))}")
        for key, value in expected.items():
            check_like(saved[key], value, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(expected):
            raise MaskclError(f"{where} should be a list of {len(expected)}")
        for i, (mine, theirs) in enumerate(zip(saved, expected)):
            check_like(mine, theirs, f"{where}.{i}")
    elif expected is not None and not _same_scalar_kind(saved, expected):
        raise MaskclError(f"{where} should be of type {type(expected).__name__}, got {saved!r}")


def _same_scalar_kind(saved: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(saved, bool):
        return type(saved) is type(expected)
    if isinstance(expected, float):
        return isinstance(saved, (int, float))
    return type(saved) is type(expected)


def _flatten(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON skeleton of ``value``; its tensors go into ``tensors`` under their path."""
    if isinstance(value, torch.Tensor):
        name = prefix
        while name in tensors:  # paths can coincide ({1: a, "1": b}); names must not
            name = f"{prefix}#{len(tensors)}"
        tensors[name] = value.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: name}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TENSOR not in value and _DICT not in value:
            return {k: _flatten(v, f"{prefix}.{k}", tensors) for k, v in value.items()}
        return {_DICT: [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} at {prefix} in a checkpoint")


def _unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            return tensors[skeleton[_TENSOR]]
        if _DICT in skeleton:
            return {k: _unflatten(v, tensors) for k, v in skeleton[_DICT]}
        return {k: _unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_unflatten(v, tensors) for v in skeleton]
    return skeleton


def save_checkpoint(path: str | Path, state: dict[str, Any], kind: str) -> None:
    """Save a nested ``state`` (dicts, lists, tensors, JSON scalars) atomically as one safetensors file.

    ``kind`` says what it holds (``training``: everything needed to resume; ``model``: a finished task's
    model), checked again by :func:`load_checkpoint`.
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "state", tensors)
    header = {"format": FORMAT, "version": FORMAT_VERSION, "kind": kind, "state": skeleton}
    write_atomic(path, save_safetensors(tensors, metadata={"maskcl": json.dumps(header)}))


def load_checkpoint(path: str | Path, kind: str, tensors: bool = True) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint`; a one-line error naming the file for anything that is
    not a readable maskcl checkpoint of ``kind`` in a format version this maskcl reads. ``tensors=False``
    reads the header only and gives None for each tensor (the JSON part of a large file, cheaply)."""
    path = Path(path)
    try:
        return _load(path, kind, tensors)
    except RecursionError:  # JSON nested past Python's limit
        raise MaskclError(
            f"{path} is a damaged maskcl checkpoint (its header is nested too deeply)"
        ) from None


def _load(path: Path, kind: str, tensors: bool) -> dict[str, Any]:
    try:
        if tensors:
            data = path.read_bytes()
        else:
            with open(path, "rb") as file:
                head = file.read(8)
                data = head + file.read(int.from_bytes(head, "little"))
    except OSError as err:
        raise MaskclError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    try:
        stored = load_safetensors(data) if tensors else collections.defaultdict(lambda: None)
        raw = _read_metadata(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MaskclError(f"{path} is not a readable checkpoint (corrupted or truncated: {reason})") from None
    try:
        header = json.loads(raw["maskcl"])
        if header["format"] != FORMAT:
            raise KeyError("format")
    except (KeyError, TypeError, ValueError):
        raise MaskclError(f"{path} is a safetensors file but not a maskcl checkpoint") from None
    version = header.get("version")
    check_version(version, f"{path} is a damaged maskcl checkpoint (version {version!r})", path, "format")
    if header.get("kind") != kind:
        raise MaskclError(f"{path} holds a {header.get('kind')!r} checkpoint, expected {kind!r}")
    try:
        return _unflatten(header["state"], stored)
    except (KeyError, TypeError, ValueError) as err:
        raise MaskclError(f"{path} is a damaged maskcl checkpoint (missing {err})") from None


def _read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's JSON header."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size].decode())
    return header.get("__metadata__") or {}
