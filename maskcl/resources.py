"""Memory checks made before allocating, so that a size that cannot fit is refused in one line instead of
ending in an allocator traceback, minutes of swapping, or the kernel's out-of-memory kill.

``available_memory(device)`` is what can still be allocated there: CUDA's free memory for a GPU; for the
CPU the system's available memory (``MemAvailable`` of ``/proc/meminfo``), bounded by the process's
cgroup limit (containers, batch schedulers) and by what ``RLIMIT_AS`` leaves of the address space.
Where nothing can be read, it is None and nothing is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from maskcl.errors import MaskclError

__all__ = ["available_memory", "check_fits", "format_bytes"]


def format_bytes(size: float) -> str:
    """``size`` bytes as ``"12.3 GB"`` (powers of 1000)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1000 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device`` (see the module docstring), or None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    limits = [_meminfo_available(), _cgroup_available(), _address_space_limit()]
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def check_fits(size: int, what: str, device: torch.device | str = "cpu") -> None:
    """A one-line error when ``size`` bytes (what ``what`` needs at least) exceed what ``device`` has
    available; nothing is allocated."""
    free = available_memory(device)
    if free is not None and size > free:
        raise MaskclError(
            f"{what} needs at least {format_bytes(size)} of memory, more than the {format_bytes(free)} "
            f"available on {torch.device(device)}"
        )


def _address_space_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = _status_field("VmSize:") or 0  # the address space this process maps already
    return max(soft - used, 0)


def _meminfo_available() -> int | None:
    return _status_field("MemAvailable:", "/proc/meminfo")


def _status_field(name: str, path: str = "/proc/self/status") -> int | None:
    """A ``name: N kB`` line of a /proc file, in bytes."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """The cgroup (v2, else v1) memory limit minus the current use, when a limit is set."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:  # v1 says "no limit" with a huge number
                return None
            return max(int(limit) - int(Path(usage_file).read_text()), 0)
        except (OSError, ValueError):
            continue
    return None
