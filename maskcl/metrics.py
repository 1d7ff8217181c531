"""Continual-learning metrics on the accuracy matrix.

``R`` is ``T x T`` with ``R[i][j]`` the test accuracy (a fraction in [0, 1]) on task ``j`` after training
tasks ``0..i`` in order. The metrics read only entries on and below the diagonal (tasks already learned);
entries above it may hold accuracies on tasks not yet trained, or NaN when they were not measured. Every
function accepts nested sequences, NumPy arrays or tensors and returns a Python float; see
``docs/metrics.md`` for worked examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch

from maskcl.errors import MaskclError

__all__ = [
    "AccuracyMatrix",
    "average_accuracy",
    "average_incremental_accuracy",
    "backward_transfer",
    "forgetting",
    "forgetting_ratio",
    "forward_transfer",
    "random_stratified_accuracy",
    "validate_accuracy_matrix",
]

MatrixLike = Sequence[Sequence[float]] | np.ndarray | torch.Tensor
VectorLike = Sequence[float] | np.ndarray | torch.Tensor


def _as_float_array(values: Any, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MaskclError(f"{what} must be numbers in a rectangular array") from exc


def _check_fractions(values: np.ndarray, what: str) -> None:
    """Raise unless every value is finite and in [0, 1]."""
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0.0) & (values <= 1.0)))
    if bad.size:
        value = values.flat[bad[0]]
        hint = " (pass fractions, not percentages)" if 1 < value < math.inf else ""
        raise MaskclError(f"{what}: value {value} is outside [0, 1]{hint}")


def _square_matrix(R: MatrixLike) -> np.ndarray:
    """``R`` as float64 (None becomes NaN), checked to be square and non-empty."""
    A = _as_float_array(R, "accuracy matrix")
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise MaskclError(f"accuracy matrix must be square T x T with T >= 1, got shape {A.shape}")
    return A


def validate_accuracy_matrix(R: MatrixLike) -> np.ndarray:
    """Return ``R`` as a float64 array after checking it is a non-empty square accuracy matrix.

    Entries on and below the diagonal must be finite and in [0, 1]; entries above it must be in [0, 1] or
    NaN (not measured), since no metric reads them.
    """
    A = _square_matrix(R)
    upper = np.triu(np.ones(A.shape, dtype=bool), k=1)
    unmeasured = np.isnan(A) & upper
    missing = np.argwhere(np.isnan(A) & ~upper)
    if missing.size:
        i, j = missing[0]
        raise MaskclError(f"accuracy matrix has no value for task {j} after training task {i}")
    _check_fractions(A[~unmeasured], "accuracy matrix")
    return A


def average_accuracy(R: MatrixLike) -> float:
    """Average accuracy after the last task (Lopez-Paz & Ranzato, NeurIPS 2017, "GEM").

    ``ACC = (1/T) * sum_j R[T-1][j]``, the mean of the last row.

    >>> average_accuracy([[0.75, float("nan")], [0.5, 1.0]])
    0.75
    """
    A = validate_accuracy_matrix(R)
    return float(A[-1].mean())


def backward_transfer(R: MatrixLike) -> float:
    """Backward transfer (Lopez-Paz & Ranzato, NeurIPS 2017, "GEM"); negative values mean forgetting.

    ``BWT = 1/(T-1) * sum_{j<T-1} (R[T-1][j] - R[j][j])``, and 0.0 when ``T = 1``.

    >>> backward_transfer([[0.75, float("nan")], [0.5, 1.0]])
    -0.25
    """
    A = validate_accuracy_matrix(R)
    if len(A) == 1:
        return 0.0
    return float(np.mean(A[-1, :-1] - np.diag(A)[:-1]))


def forgetting(R: MatrixLike) -> float:
    """Average forgetting (Chaudhry et al., ECCV 2018, "Riemannian Walk").

    ``f_j = max_{l in j..T-2} R[l][j] - R[T-1][j]`` for ``j < T-1``: the drop from the best accuracy the
    task had once learned to its final one; ``F = 1/(T-1) * sum_j f_j``, and 0.0 when ``T = 1``.

    >>> forgetting([[0.75, float("nan"), float("nan")], [1.0, 0.5, float("nan")], [0.5, 0.5, 1.0]])
    0.25
    """
    A = validate_accuracy_matrix(R)
    if len(A) == 1:
        return 0.0
    learned = np.tril(np.ones((len(A) - 1, len(A) - 1), dtype=bool))
    best = np.where(learned, A[:-1, :-1], -np.inf).max(axis=0)
    return float(np.mean(best - A[-1, :-1]))


def forward_transfer(R: MatrixLike, initial: VectorLike) -> float:
    """Forward transfer (Lopez-Paz & Ranzato, NeurIPS 2017, "GEM"): how much learning the earlier tasks
    helps a task before it is trained.

    ``FWT = 1/(T-1) * sum_{i=1}^{T-1} (R[i-1][i] - b_i)``, with ``b_i`` the accuracy on task ``i`` of the
    network at its initialisation (``initial``, ``T`` values), and 0.0 when ``T = 1``. It reads the entries
    just above the diagonal, which must be measured.

    >>> forward_transfer([[0.75, 0.5], [0.5, 1.0]], [0.5, 0.25])
    0.25
    """
    A = validate_accuracy_matrix(R)
    b = _as_float_array(initial, "initial accuracies")
    if b.shape != (len(A),):
        raise MaskclError(f"initial accuracies must be {len(A)} values, got shape {b.shape}")
    _check_fractions(b, "initial accuracies")
    if len(A) == 1:
        return 0.0
    before = np.diag(A, k=1)
    if np.isnan(before).any():
        j = int(np.flatnonzero(np.isnan(before))[0]) + 1
        raise MaskclError(f"accuracy matrix has no value for task {j} after training task {j - 1}")
    return float(np.mean(before - b[1:]))


def average_incremental_accuracy(R: MatrixLike) -> float:
    """Average incremental accuracy (Rebuffi et al., CVPR 2017, "iCaRL"): the average accuracy after each
    task, averaged over the tasks.

    ``A = (1/T) * sum_i ACC_i``, ``ACC_i = 1/(i+1) * sum_{j<=i} R[i][j]``.

    >>> average_incremental_accuracy([[1.0, float("nan")], [0.5, 1.0]])
    0.875
    """
    A = validate_accuracy_matrix(R)
    return float(np.mean([A[i, : i + 1].mean() for i in range(len(A))]))


def random_stratified_accuracy(labels: VectorLike) -> float:
    """Expected accuracy of a classifier guessing class ``c`` with probability ``p_c``: ``sum_c p_c**2``.

    ``p_c`` is the frequency of class ``c`` in ``labels`` (the reference ``A_R`` of Serrà et al., 2018).

    >>> random_stratified_accuracy([0, 0, 0, 1])
    0.625
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise MaskclError(f"labels must be a non-empty 1-D sequence, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise MaskclError(f"labels must be integer class labels, got dtype {y.dtype}")
    counts = np.unique(y, return_counts=True)[1]
    return float(np.sum((counts / y.size) ** 2))


def forgetting_ratio(
    R: MatrixLike, R_joint: MatrixLike | VectorLike, random_acc: float | VectorLike
) -> float:
    """Average forgetting ratio after the last task (Serrà et al., ICML 2018, "HAT", Sec. 4, Eq. 6).

    ``rho^{tau<=t} = (A^{tau<=t} - A_R^tau) / (A_J^{tau<=t} - A_R^tau) - 1`` and
    ``rho^{<=t} = (1/t) * sum_{tau<=t} rho^{tau<=t}``, here with ``t = T``: ``A^{tau<=T} = R[T-1][tau]``,
    ``A_J^{tau<=T}`` the accuracy on task ``tau`` of a multitask model trained jointly on all ``T`` tasks
    (``R_joint``: that model's ``T`` accuracies, or the joint accuracy matrix, whose last row is used) and
    ``A_R^tau`` the accuracy of a random stratified classifier (``random_acc``: one value for all tasks or
    one per task, see :func:`random_stratified_accuracy`). ``-1`` means random, ``0`` as good as joint
    training. For ``rho^{<=t}`` with ``t < T`` pass the top-left ``t x t`` blocks.

    >>> forgetting_ratio([[1.0, float("nan")], [0.75, 1.0]], [1.0, 1.0], 0.5)
    -0.25
    """
    A = validate_accuracy_matrix(R)
    T = len(A)
    joint = _as_float_array(R_joint, "joint accuracies")
    if joint.ndim == 2 and joint.shape == A.shape:
        joint = validate_accuracy_matrix(joint)[-1]
    elif joint.shape == (T,):
        _check_fractions(joint, "joint accuracies")
    else:
        raise MaskclError(
            f"joint accuracies must be {T} values or a {T} x {T} matrix, got shape {joint.shape}"
        )
    chance = _as_float_array(random_acc, "random accuracies")
    if chance.ndim == 0:
        chance = np.full(T, float(chance))
    elif chance.shape != (T,):
        raise MaskclError(f"random accuracies must be one value or {T} values, got shape {chance.shape}")
    _check_fractions(chance, "random accuracies")
    gap = joint - chance
    if (gap <= 0).any():
        j = int(np.flatnonzero(gap <= 0)[0])
        raise MaskclError(
            f"joint accuracy on task {j} ({joint[j]}) is not above random ({chance[j]}): ratio undefined"
        )
    return float(np.mean((A[-1] - chance) / gap - 1.0))


class AccuracyMatrix:
    """Collects ``R`` during a run, torchmetrics style: :meth:`update` per evaluation, :meth:`compute` for
    ACC / BWT / forgetting after the latest trained task.

    >>> m = AccuracyMatrix(2)
    >>> m.update(0, 0, 0.75)
    >>> m.update(1, 0, 0.5)
    >>> m.update(1, 1, 1.0)
    >>> m.compute()["bwt"]
    -0.25
    >>> print(m.to_table())
                  task 0  task 1
    after task 0    75.0       -
    after task 1    50.0   100.0
    """

    def __init__(self, num_tasks: int) -> None:
        if not isinstance(num_tasks, Integral) or num_tasks < 1:
            raise MaskclError(f"num_tasks must be a positive integer, got {num_tasks!r}")
        self.num_tasks = num_tasks
        self._values = np.full((num_tasks, num_tasks), np.nan)

    @classmethod
    def from_matrix(cls, R: MatrixLike) -> AccuracyMatrix:
        """Rebuild from a saved ``T x T`` matrix like ``compute()["acc_matrix"]``; None/NaN: not recorded."""
        A = _square_matrix(R)
        matrix = cls(len(A))
        for i, j in np.argwhere(~np.isnan(A)).tolist():
            matrix.update(i, j, A[i, j])
        return matrix

    def _check_task(self, task: int, what: str) -> None:
        if not isinstance(task, Integral) or not 0 <= task < self.num_tasks:
            raise MaskclError(
                f"{what} {task!r} out of range: {self.num_tasks} tasks (0-{self.num_tasks - 1})"
            )

    def update(self, trained_task: int, eval_task: int, accuracy: float) -> None:
        """Record the accuracy (a fraction) on ``eval_task`` after training ``trained_task``."""
        self._check_task(trained_task, "trained_task")
        self._check_task(eval_task, "eval_task")
        value = float(accuracy)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise MaskclError(f"accuracy {value} is outside [0, 1] (pass a fraction, not a percentage)")
        self._values[trained_task, eval_task] = value

    def to_list(self) -> list[list[float | None]]:
        """The full ``T x T`` matrix as lists, None where not recorded (what :meth:`from_matrix` takes)."""
        return [[None if math.isnan(v) else v for v in row] for row in self._values.tolist()]

    def row(self, i: int) -> list[float]:
        """Accuracies on tasks ``0..T-1`` after training task ``i``; NaN where not recorded."""
        self._check_task(i, "task")
        return self._values[i].tolist()

    def compute(self) -> dict[str, Any]:
        """Metrics after the latest task ``i`` with a recorded row, from the top-left ``(i+1) x (i+1)`` block.

        Keys: ``after_task`` (``i``), ``acc_matrix`` (the block as lists, None where not recorded), ``acc``,
        ``bwt``, ``forgetting`` and ``avg_incremental_acc``.
        """
        rows = np.flatnonzero(~np.isnan(self._values).all(axis=1))
        if rows.size == 0:
            raise MaskclError("no accuracies recorded yet: call update() first")
        last = int(rows[-1])
        block = self._values[: last + 1, : last + 1]
        return {
            "after_task": last,
            "acc_matrix": [[None if math.isnan(v) else v for v in row] for row in block.tolist()],
            "acc": average_accuracy(block),
            "bwt": backward_transfer(block),
            "forgetting": forgetting(block),
            "avg_incremental_acc": average_incremental_accuracy(block),
        }

    def to_table(self) -> str:
        """Fixed-width text table of the recorded rows, in percent with one decimal, ``-`` if not recorded."""
        rows = np.flatnonzero(~np.isnan(self._values).all(axis=1))
        n_rows = int(rows[-1]) + 1 if rows.size else 0
        label = f"after task {self.num_tasks - 1}"
        width = max(len(f"task {self.num_tasks - 1}"), len("100.0")) + 2
        lines = [" " * len(label) + "".join(f"task {j}".rjust(width) for j in range(self.num_tasks))]
        for i in range(n_rows):
            cells = ("-" if math.isnan(v) else f"{100 * v:.1f}" for v in self._values[i])
            lines.append(f"after task {i}".ljust(len(label)) + "".join(c.rjust(width) for c in cells))
        return "\n".join(lines)
