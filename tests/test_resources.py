"""Memory checks before allocating: sizes that cannot fit are refused in one line, at once, and nothing is
allocated or written (measured as the peak memory of a real process)."""

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import write_npz

from maskcl.errors import MaskclError
from maskcl.resources import available_memory, check_fits, format_bytes


def test_available_memory_is_a_positive_size_on_the_cpu():
    free = available_memory("cpu")
    assert free is not None and 0 < free < 1 << 50
    assert available_memory("meta") is None


def test_check_fits_refuses_more_than_is_available():
    check_fits(1000, "a little")
    with pytest.raises(
        MaskclError, match=r"a lot needs at least 1\.0 PB of memory, more than the .* available"
    ):
        check_fits(10**15, "a lot")


def test_format_bytes():
    assert [format_bytes(n) for n in (12, 1500, 2.5e9, 4e15)] == ["12 bytes", "1.5 kB", "2.5 GB", "4.0 PB"]


def test_an_address_space_limit_counts():
    """``RLIMIT_AS`` (ulimit -v) bounds what is available, less what the process maps already."""
    code = (
        "import resource; from maskcl.resources import available_memory\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY))\n"
        "print(available_memory('cpu'))"
    )
    limited = int(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert 0 < limited < 6 << 30


def _peak_memory_of(args: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``maskcl ARGS`` as the only child of a fresh Python and return it with its peak RSS in bytes."""
    code = (
        "import resource, subprocess, sys\n"
        f"r = subprocess.run([sys.executable, '-m', 'maskcl', *{args!r}],\n"
        "                   capture_output=True, text=True)\n"
        "sys.stderr.write(r.stderr); sys.stdout.write(r.stdout)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(r.returncode)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done, int(done.stdout.splitlines()[-1]) * 1024


@pytest.mark.parametrize(
    ("args", "fragments", "shape"),
    [
        (["--hidden", "100000000"], ["hat mlp network", "parameters"], (6, 6)),
        (["--method", "hypermask", "--embedding-dim", "1000000000"], ["hypermask mlp network"], (6, 6)),
        (
            ["--scenario", "permuted", "--num-tasks", "100000"],
            ["--num-tasks 100000", "accuracy matrix"],
            (6, 6),
        ),
        (["--method", "hypermask", "--hyper-hidden", "1000000,1000000"], ["hypermask mlp network"], (6, 6)),
        # a covariance of 90,000 pixels per class: 32 GB each
        (["--task-inference", "--hidden", "8"], ["--task-inference gaussian: its statistics"], (300, 300)),
    ],
)
def test_sizes_that_cannot_be_allocated_are_refused_before_allocating(tmp_path, args, fragments, shape):
    """Before, these ended in an allocator traceback (after 86 s for the embedding) or a 1x1 run."""
    data = write_npz(tmp_path / "d.npz", shape=shape)
    out = tmp_path / "out"
    done, peak = _peak_memory_of(["run", "--data", str(data), *args, "--out", str(out)])
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("maskcl: error: ") and done.stderr.count("\n") == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr
    assert "more than the" in done.stderr and "available on cpu" in done.stderr
    assert peak < 2 << 30  # nothing of the size was allocated
    assert not out.exists()


def test_a_huge_permuted_scenario_is_refused_before_its_permutations(tmp_path):
    import numpy as np

    from maskcl.data import permuted_scenario

    x, y = np.zeros((4, 1000)), np.array([0, 1, 0, 1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(MaskclError, match="10000000000 permuted tasks"):
        permuted_scenario(x, y, x, y, num_tasks=10**10)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # kB
    assert Path(tmp_path).exists()
