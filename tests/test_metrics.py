"""Tests for the continual-learning metrics, on matrices worked out by hand in the comments."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import maskcl.metrics
from maskcl.errors import MaskclError
from maskcl.metrics import (
    AccuracyMatrix,
    average_accuracy,
    average_incremental_accuracy,
    backward_transfer,
    forgetting,
    forgetting_ratio,
    forward_transfer,
    random_stratified_accuracy,
    validate_accuracy_matrix,
)

# R[i][j]: accuracy on task j after training task i. Above the diagonal: tasks not trained yet.
R3 = [
    [0.90, 0.99, 0.10],
    [0.92, 0.95, 0.20],
    [0.70, 0.85, 1.00],
]
# ACC = (0.70 + 0.85 + 1.00) / 3 = 2.55 / 3 = 0.85
# BWT = ((0.70 - 0.90) + (0.85 - 0.95)) / 2 = (-0.20 - 0.10) / 2 = -0.15
# forgetting: f_0 = max(R[0][0], R[1][0]) - R[2][0] = 0.92 - 0.70 = 0.22
#             f_1 = max(R[1][1]) - R[2][1] = 0.95 - 0.85 = 0.10  (R[0][1] = 0.99, before task 1 was learned,
#             does not count)
#             F = (0.22 + 0.10) / 2 = 0.16
# forgetting ratio with joint accuracies (0.95, 0.90, 1.00) and random accuracy 0.5 on every task:
#   rho_0 = (0.70 - 0.5) / (0.95 - 0.5) - 1 = 0.20 / 0.45 - 1 = -5/9
#   rho_1 = (0.85 - 0.5) / (0.90 - 0.5) - 1 = 0.35 / 0.40 - 1 = -1/8
#   rho_2 = (1.00 - 0.5) / (1.00 - 0.5) - 1 = 0
#   rho = (-5/9 - 1/8 + 0) / 3 = -(40 + 9) / 72 / 3 = -49/216
JOINT3 = [0.95, 0.90, 1.00]


def test_hand_worked_3x3() -> None:
    assert average_accuracy(R3) == pytest.approx(0.85, abs=1e-12)
    assert backward_transfer(R3) == pytest.approx(-0.15, abs=1e-12)
    assert forgetting(R3) == pytest.approx(0.16, abs=1e-12)
    assert forgetting_ratio(R3, JOINT3, 0.5) == pytest.approx(-49 / 216, abs=1e-12)


def test_numpy_and_tensor_inputs_give_the_same_numbers() -> None:
    for R in (np.array(R3), torch.tensor(R3, dtype=torch.float64), torch.tensor(R3)):
        assert average_accuracy(R) == pytest.approx(0.85, abs=1e-6)
        assert backward_transfer(R) == pytest.approx(-0.15, abs=1e-6)
        assert forgetting(R) == pytest.approx(0.16, abs=1e-6)
        assert isinstance(forgetting(R), float)


def test_upper_triangle_may_be_unmeasured() -> None:
    nan = float("nan")
    lower = [[0.90, nan, nan], [0.92, 0.95, nan], [0.70, 0.85, 1.00]]
    for metric in (average_accuracy, backward_transfer, forgetting):
        assert metric(lower) == metric(R3)
    assert average_accuracy([[0.9, None], [0.8, 1.0]]) == pytest.approx(0.9)  # None, as in saved JSON


def test_forgetting_uses_the_best_accuracy_once_learned_not_the_diagonal() -> None:
    # task 0 improves after task 1 (0.5 -> 0.75), then drops to 0.25: f_0 = 0.75 - 0.25 = 0.5,
    # while BWT only sees 0.25 - 0.5 = -0.25. Exact binary fractions, so exact results.
    R = [[0.5, 0.0, 0.0], [0.75, 1.0, 0.0], [0.25, 1.0, 1.0]]
    # f_0 = 0.5, f_1 = 1.0 - 1.0 = 0 -> F = 0.25 ; BWT = ((0.25 - 0.5) + (1.0 - 1.0)) / 2 = -0.125
    assert forgetting(R) == 0.25
    assert backward_transfer(R) == -0.125


def test_single_task() -> None:
    assert average_accuracy([[0.7]]) == pytest.approx(0.7)
    assert backward_transfer([[0.7]]) == 0.0
    assert forgetting([[0.7]]) == 0.0


def test_perfect_retention_gives_exactly_zero() -> None:
    # every column stays at the value reached when its task was learned
    R = [[0.3, 0.1, 0.1], [0.3, 0.7, 0.2], [0.3, 0.7, 0.9]]
    assert backward_transfer(R) == 0.0
    assert forgetting(R) == 0.0
    assert average_accuracy(R) == pytest.approx((0.3 + 0.7 + 0.9) / 3)


def test_forgetting_ratio_reads_the_last_row_of_a_joint_matrix_and_per_task_random() -> None:
    joint_matrix = [[0.97, 0.0, 0.0], [0.96, 0.93, 0.0], JOINT3]
    assert forgetting_ratio(R3, joint_matrix, 0.5) == pytest.approx(-49 / 216, abs=1e-12)
    # random 0.25 for task 2 only: rho_2 = (1.0 - 0.25) / (1.0 - 0.25) - 1 = 0, the rest unchanged
    assert forgetting_ratio(R3, JOINT3, [0.5, 0.5, 0.25]) == pytest.approx(-49 / 216, abs=1e-12)
    # as good as joint training on every task -> 0; at random level on every task -> -1
    assert forgetting_ratio([[0.8, 0.0], [0.8, 0.9]], [0.8, 0.9], 0.5) == pytest.approx(0.0, abs=1e-12)
    assert forgetting_ratio([[0.8, 0.0], [0.5, 0.5]], [0.8, 0.9], 0.5) == pytest.approx(-1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("joint", "random_acc", "message"),
    [
        ([0.95, 0.5, 1.0], 0.5, "joint accuracy on task 1 (0.5) is not above random (0.5)"),
        ([0.95, 0.9], 0.5, "joint accuracies must be 3 values or a 3 x 3 matrix, got shape (2,)"),
        ([0.95, 0.9, 1.0], [0.5, 0.5], "random accuracies must be one value or 3 values, got shape (2,)"),
        ([0.95, 0.9, 1.0], 50, "random accuracies: value 50.0 is outside [0, 1] (pass fractions"),
        ([95, 90, 100], 0.5, "joint accuracies: value 95.0 is outside [0, 1]"),
    ],
    ids=["joint-not-above-random", "joint-shape", "random-shape", "random-percent", "joint-percent"],
)
def test_forgetting_ratio_errors(joint, random_acc, message: str) -> None:
    with pytest.raises(MaskclError) as info:
        forgetting_ratio(R3, joint, random_acc)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_random_stratified_accuracy_formula_and_simulation() -> None:
    assert random_stratified_accuracy([0, 0, 0, 1]) == 0.625  # 0.75^2 + 0.25^2
    assert random_stratified_accuracy(torch.arange(10).repeat(7)) == pytest.approx(0.1)
    # a classifier guessing class c with probability p_c, simulated: accuracy -> sum p_c^2 = 0.38
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [5000, 3000, 2000])
    guesses = rng.choice(3, size=(40, labels.size), p=[0.5, 0.3, 0.2])
    assert random_stratified_accuracy(labels) == pytest.approx(0.38)
    assert (guesses == labels).mean() == pytest.approx(0.38, abs=0.005)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "non-empty 1-D"),
        ([[0, 1]], "non-empty 1-D"),
        ([0.0, 1.0], "integer class labels, got dtype float64"),
    ],
    ids=["empty", "two-dim", "float"],
)
def test_random_stratified_accuracy_errors(labels, message: str) -> None:
    with pytest.raises(MaskclError, match=message):
        random_stratified_accuracy(labels)


@pytest.mark.parametrize(
    ("R", "message"),
    [
        ([[0.5, 0.5]], "must be square T x T with T >= 1, got shape (1, 2)"),
        ([], "must be square T x T with T >= 1, got shape (0,)"),
        ([[0.5], [0.5, 0.5]], "must be numbers in a rectangular array"),
        ([[0.5, 0.1], [float("nan"), 0.5]], "has no value for task 0 after training task 1"),
        ([[0.5, float("inf")], [0.5, 0.5]], "accuracy matrix: value inf is outside [0, 1]"),
        ([[95.0, 0.0], [90.0, 85.0]], "value 95.0 is outside [0, 1] (pass fractions, not percentages)"),
        ([[0.5, 0.0], [-0.1, 0.5]], "accuracy matrix: value -0.1 is outside [0, 1]"),
        ([["a"]], "must be numbers"),
    ],
    ids=["not-square", "empty", "ragged", "missing-below-diagonal", "inf", "percent", "negative", "text"],
)
def test_validate_accuracy_matrix_errors(R, message: str) -> None:
    with pytest.raises(MaskclError) as info:
        validate_accuracy_matrix(R)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_percentage_hint_only_for_values_above_one() -> None:
    for R, message in (
        ([[0.5, 0.0], [-0.1, 0.5]], "accuracy matrix: value -0.1 is outside [0, 1]"),
        ([[0.5, float("inf")], [0.5, 0.5]], "accuracy matrix: value inf is outside [0, 1]"),
        (
            [[0.5, 0.0], [0.5, 1.5]],
            "accuracy matrix: value 1.5 is outside [0, 1] (pass fractions, not percentages)",
        ),
    ):
        with pytest.raises(MaskclError) as info:
            validate_accuracy_matrix(R)
        assert str(info.value) == message


def test_validate_accuracy_matrix_returns_a_float_copy() -> None:
    source = np.array(R3, dtype=np.float32)
    A = validate_accuracy_matrix(source)
    assert A.dtype == np.float64 and A.shape == (3, 3)
    A[0, 0] = 0.0
    assert source[0, 0] == np.float32(0.90)


def fill(matrix: AccuracyMatrix, rows: int) -> None:
    for i in range(rows):
        for j in range(3):
            matrix.update(i, j, R3[i][j])


def test_accuracy_matrix_reports_after_each_task_from_the_top_left_block() -> None:
    m = AccuracyMatrix(3)
    fill(m, 1)
    after0 = m.compute()
    assert after0["after_task"] == 0 and after0["acc_matrix"] == [[0.90]]
    assert (after0["acc"], after0["bwt"], after0["forgetting"]) == (0.90, 0.0, 0.0)
    fill(m, 2)
    after1 = m.compute()
    # block [[0.90, 0.99], [0.92, 0.95]]: ACC = (0.92 + 0.95) / 2 = 0.935, BWT = 0.92 - 0.90 = 0.02,
    # forgetting = 0.90 - 0.92 = -0.02 (task 0 improved)
    assert after1["acc_matrix"] == [[0.90, 0.99], [0.92, 0.95]]
    assert after1["acc"] == pytest.approx(0.935) and after1["bwt"] == pytest.approx(0.02)
    assert after1["forgetting"] == pytest.approx(-0.02)
    fill(m, 3)
    after2 = m.compute()
    assert after2["acc_matrix"] == R3
    assert after2["acc"] == pytest.approx(0.85) and after2["bwt"] == pytest.approx(-0.15)
    assert after2["forgetting"] == pytest.approx(0.16)
    assert m.row(1) == [0.92, 0.95, 0.20]


def test_accuracy_matrix_lower_triangle_only_and_table() -> None:
    m = AccuracyMatrix(3)
    for i in range(2):
        for j in range(i + 1):
            m.update(i, j, R3[i][j])
    result = m.compute()
    assert result["acc_matrix"] == [[0.90, None], [0.92, 0.95]]
    assert math.isnan(m.row(0)[1]) and m.row(0)[0] == 0.90
    assert m.to_table() == (
        "              task 0  task 1  task 2\n"
        "after task 0    90.0       -       -\n"
        "after task 1    92.0    95.0       -"
    )
    assert AccuracyMatrix(2).to_table() == "              task 0  task 1"


def test_accuracy_matrix_round_trips_through_from_matrix() -> None:
    m = AccuracyMatrix(3)
    fill(m, 3)
    again = AccuracyMatrix.from_matrix(m.compute()["acc_matrix"])
    assert again.compute() == m.compute() and again.to_table() == m.to_table()
    partial = AccuracyMatrix.from_matrix([[0.5, None], [None, None]])
    assert partial.compute()["acc_matrix"] == [[0.5]]


def test_accuracy_matrix_errors() -> None:
    m = AccuracyMatrix(3)
    with pytest.raises(MaskclError, match="no accuracies recorded yet"):
        m.compute()
    with pytest.raises(MaskclError, match=r"accuracy 95.0 is outside \[0, 1\] \(pass a fraction"):
        m.update(0, 0, 95.0)
    with pytest.raises(MaskclError, match=r"eval_task 3 out of range: 3 tasks \(0-2\)"):
        m.update(0, 3, 0.5)
    with pytest.raises(MaskclError, match="trained_task -1 out of range"):
        m.update(-1, 0, 0.5)
    m.update(1, 1, 0.5)
    with pytest.raises(MaskclError, match="no value for task 0 after training task 0"):
        m.compute()
    with pytest.raises(MaskclError, match="num_tasks must be a positive integer, got 0"):
        AccuracyMatrix(0)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(maskcl.metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


def test_docs_examples_run() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
    result = doctest.testfile(str(docs), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


def test_forward_transfer_by_hand():
    # initial accuracies b = (0.5, 0.4, 0.3):
    # FWT = ((R[0][1] - b_1) + (R[1][2] - b_2)) / 2 = ((0.99 - 0.4) + (0.20 - 0.3)) / 2 = 0.245
    assert forward_transfer(R3, [0.5, 0.4, 0.3]) == pytest.approx(0.245)
    assert forward_transfer([[0.8]], [0.5]) == 0.0
    with pytest.raises(MaskclError, match="initial accuracies must be 3 values"):
        forward_transfer(R3, [0.5, 0.4])
    with pytest.raises(MaskclError, match="no value for task 2 after training task 1"):
        forward_transfer([[0.9, 0.5, 0.1], [0.9, 0.9, float("nan")], [0.9, 0.9, 0.9]], [0.5, 0.5, 0.5])


def test_average_incremental_accuracy_by_hand():
    # ACC_0 = 0.90, ACC_1 = (0.92 + 0.95) / 2 = 0.935, ACC_2 = 0.85: (0.90 + 0.935 + 0.85) / 3 = 0.895
    assert average_incremental_accuracy(R3) == pytest.approx(0.895)
    assert AccuracyMatrix.from_matrix(R3).compute()["avg_incremental_acc"] == pytest.approx(0.895)
