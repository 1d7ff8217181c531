"""The hypernetwork of HyperMask: a task embedding in, one score per masked target entry out."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from maskcl.core.context import task_rows
from maskcl.errors import MaskclError

OUTPUT_BIAS = 1.0
"""Initial bias of the hypernetwork's output layer: masks start near ``tanh(1) = 0.76`` (maskcl's choice:
near-zero scores scale every target weight down tenfold and slow the first steps; larger ones saturate
``tanh``, whose gradient then vanishes)."""

DEFAULT_SIZE = 0.2
"""The default hypernetwork size, as a fraction of the target's masked weights (see :func:`auto_size`)."""
PUBLISHED_WIDTH = 100
"""The widest hidden layers the automatic size gives: the method's published (100, 100)."""
MIN_WIDTH = 16
"""The narrowest hidden layers the automatic size gives (the floor for small targets)."""


def hypernetwork_parameters(
    total: int,
    num_tasks: int,
    embedding_dim: int,
    hidden: Sequence[int],
    chunks: int,
    chunk_embedding_dim: int,
) -> int:
    """The parameter count of ``HyperNetwork(total, num_tasks, ...)`` with these sizes (``chunks`` 0:
    unchunked), without building it."""
    if chunks == 0:
        widths, extra = [embedding_dim, *hidden, total], 0
    else:
        chunks = min(chunks, total)
        widths = [embedding_dim + chunk_embedding_dim, *hidden, math.ceil(total / chunks)]
        extra = chunks * chunk_embedding_dim
    return num_tasks * embedding_dim + extra + sum((a + 1) * b for a, b in itertools.pairwise(widths))


def auto_size(
    total: int,
    num_tasks: int,
    *,
    size: float = DEFAULT_SIZE,
    embedding_dim: int = 24,
    hidden: Sequence[int] | None = None,
    chunks: int | None = None,
    chunk_embedding_dim: int = 16,
) -> tuple[tuple[int, ...], int]:
    """The hypernetwork's ``(hidden, chunks)`` for a target of ``total`` masked weights, the ones left
    ``None`` chosen so that its parameters (task and chunk embeddings included) stay within
    ``budget = size x total`` and come close to it; given values are kept as they are.

    - Both ``None``: two hidden layers of width ``h``, the largest in
      [:data:`MIN_WIDTH`, :data:`PUBLISHED_WIDTH`] = [16, 100] for which some chunk count fits the budget,
      and the fewest chunks that then fit (the largest chunks: fewest hypernetwork passes, and each output
      row serves the fewest entries). For a target where width 100 fits (``14,200 + 8 sqrt(101 total)``
      within the budget: over about 286,000 weights at 0.2) that is ``h = 100`` and about ``101 / size``
      chunks.
    - ``hidden`` given, ``chunks`` None: the fewest chunks that fit.
    - ``chunks`` given (> 0), ``hidden`` None: ``(h, h)`` with ``h`` the largest in [16, 100] that fits.
    - ``chunks`` 0 (unchunked, whose last layer alone has more weights than the target), ``hidden`` None:
      the published (100, 100); no budget applies.

    The floor: when nothing fits (small targets; at 0.2 and the default embedding sizes, below about
    38,000 weights), width 16 (or the given widths) and the chunk count that makes the hypernetwork
    smallest, about ``sqrt((h + 1) total / chunk_embedding_dim)`` (or the given count). The figures above
    are for the default embedding sizes (24, 16).
    """
    if hidden is not None and chunks is not None:
        return tuple(hidden), chunks
    if chunks == 0:
        return (PUBLISHED_WIDTH, PUBLISHED_WIDTH), 0
    budget = size * total

    def fewest(widths: Sequence[int]) -> int | None:
        return _fewest_chunks(total, num_tasks, embedding_dim, widths, chunks, chunk_embedding_dim, budget)

    if hidden is None:
        widths = range(PUBLISHED_WIDTH, MIN_WIDTH - 1, -1)
        width = next((h for h in widths if fewest((h, h)) is not None), MIN_WIDTH)
        hidden = (width, width)
    if chunks is None:
        chunks = fewest(hidden)
        if chunks is None:
            chunks = _smallest_chunks(total, hidden, chunk_embedding_dim)
    return tuple(hidden), chunks


def _fewest_chunks(
    total: int,
    num_tasks: int,
    embedding_dim: int,
    hidden: Sequence[int],
    chunks: int | None,
    chunk_embedding_dim: int,
    budget: float,
) -> int | None:
    """The fewest chunks (``chunks`` itself, if given) keeping the hypernetwork within ``budget``, or None.

    Its parameters are ``fixed + d C + (h + 1) ceil(total / C)`` for ``C`` chunks of embedding size ``d``
    and last width ``h``: at least ``fixed + d C + (h + 1) total / C``, which is within the budget only
    between the two roots of a quadratic; the exact count is scanned from the smaller root up."""
    if chunks is not None:
        size = hypernetwork_parameters(total, num_tasks, embedding_dim, hidden, chunks, chunk_embedding_dim)
        return chunks if size <= budget else None
    d, out = chunk_embedding_dim, hidden[-1] + 1
    fixed = hypernetwork_parameters(total, num_tasks, embedding_dim, hidden, 1, d) - d - out * total
    room = budget - fixed
    discriminant = room * room - 4 * d * out * total
    if room <= 0 or discriminant < 0:
        return None
    low, high = (room - math.sqrt(discriminant)) / (2 * d), (room + math.sqrt(discriminant)) / (2 * d)
    for c in range(max(1, math.floor(low)), min(math.ceil(high), total) + 1):
        if d * c + out * -(-total // c) <= room:
            return c
    return None


def _smallest_chunks(total: int, hidden: Sequence[int], chunk_embedding_dim: int) -> int:
    """The chunk count that makes a hypernetwork of these widths smallest (the fewest, on a tie).

    ``P(C) = d C + (h + 1) ceil(total / C)`` (less the parts that do not depend on ``C``) is at least
    ``g(x) = d total / x + (h + 1) x`` at ``x = total / C``, least at ``x0 = sqrt(d total / (h + 1))``, and
    some ``C`` reaches ``g(x0) + d + h + 1``; so the best ``C`` has ``g(total / C)`` no higher, which bounds
    ``total / C`` to an interval around ``x0``, scanned exactly."""
    d, out = chunk_embedding_dim, hidden[-1] + 1
    x0, k = math.sqrt(d * total / out), d / out + 1  # g(x) - g(x0) = out (x - x0)^2 / x <= out k
    spread = math.sqrt(k * x0 + k * k / 4)
    x_low, x_high = x0 + k / 2 - spread, x0 + k / 2 + spread
    first = max(1, math.floor(total / x_high))
    last = total if x_low <= 1 else min(total, math.ceil(total / x_low))
    return min(range(first, last + 1), key=lambda c: d * c + out * -(-total // c))


class HyperNetwork(nn.Module):
    """Maps task ``t``'s learned embedding ``e_t`` to ``total`` mask scores.

    Unchunked (``chunks=0``, the original HyperMask design): an MLP ``e_t -> hidden -> total``, whose last
    layer alone has ``hidden[-1] * total`` weights. Chunked (von Oswald et al., ICLR 2020): the output is
    cut into ``chunks`` pieces of ``ceil(total / chunks)`` scores; piece ``k`` is ``MLP([e_t, c_k])`` with a
    learned chunk embedding ``c_k`` shared by all tasks, so the MLP's last layer is ``chunks`` times
    smaller. ``hidden`` or ``chunks`` left ``None`` are sized to ``size x total`` parameters
    (:func:`auto_size`); given ones build exactly that network.

    Args:
        total: number of scores (masked target entries).
        num_tasks: number of task embeddings.
        embedding_dim: size of each task embedding.
        hidden: widths of the MLP's hidden layers (ReLU); None: sized to the target.
        chunks: number of output chunks, 0 for the unchunked design; None: sized to the target.
        chunk_embedding_dim: size of each chunk embedding.
        size: the automatic size, a fraction of ``total`` (used only for what is left None).
    """

    def __init__(
        self,
        total: int,
        num_tasks: int,
        embedding_dim: int = 24,
        hidden: Sequence[int] | None = None,
        chunks: int | None = None,
        chunk_embedding_dim: int = 16,
        size: float = DEFAULT_SIZE,
    ) -> None:
        super().__init__()
        if total < 1:
            raise MaskclError("the target has no maskable weights")
        if chunks is not None and chunks < 0:
            raise MaskclError(f"chunks must be >= 0 (0: unchunked, None: sized to the target), got {chunks}")
        if hidden is not None and (len(hidden) < 1 or min(hidden) < 1):
            raise MaskclError(f"hidden must be positive widths, got {tuple(hidden)}")
        if not (size > 0 and math.isfinite(size)):
            raise MaskclError(f"size must be a fraction > 0 of the target, got {size}")
        hidden, chunks = auto_size(
            total, num_tasks, size=size, embedding_dim=embedding_dim, hidden=hidden, chunks=chunks,
            chunk_embedding_dim=chunk_embedding_dim,
        )  # fmt: skip
        self.total, self.hidden = total, hidden
        self.task_embeddings = nn.Parameter(torch.randn(num_tasks, embedding_dim) * 0.1)
        if chunks == 0:
            self.chunk_size, inputs = total, embedding_dim
            self.chunk_embeddings = None
        else:
            chunks = min(chunks, total)
            self.chunk_size, inputs = math.ceil(total / chunks), embedding_dim + chunk_embedding_dim
            self.chunk_embeddings = nn.Parameter(torch.randn(chunks, chunk_embedding_dim) * 0.1)
        self.chunks = chunks
        widths = [inputs, *hidden, self.chunk_size]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers[:-1])
        with torch.no_grad():  # scores start near OUTPUT_BIAS: masks |tanh(h)| near 1, the target as built
            self.mlp[-1].bias.fill_(OUTPUT_BIAS)

    def forward(self, tasks: torch.Tensor | int) -> torch.Tensor:
        """Scores ``[total]`` for one task, or ``[len(tasks), total]`` for a 1-D tensor of task ids."""
        single = isinstance(tasks, int)
        embedding = self.task_embeddings[torch.as_tensor([tasks] if single else tasks)]  # [n, d]
        return self.scores(embedding)[0] if single else self.scores(embedding)

    def owned_entries(self, tasks: list[int]) -> dict[str, torch.Tensor]:
        """The embeddings of ``tasks``: each task owns its own (kept once it is learned)."""
        rows = task_rows(self.task_embeddings.shape[0], tasks, self.task_embeddings.device)
        return {"task_embeddings": rows.expand_as(self.task_embeddings)}

    def scores(self, embedding: torch.Tensor) -> torch.Tensor:
        """Scores ``[n, total]`` for embeddings ``[n, embedding_dim]`` (given, e.g. a snapshot's)."""
        if self.chunk_embeddings is None:
            return self.mlp(embedding)
        n, chunks = embedding.shape[0], self.chunk_embeddings.shape[0]
        inputs = torch.cat(
            [embedding.unsqueeze(1).expand(n, chunks, -1), self.chunk_embeddings.expand(n, -1, -1)], dim=2
        )
        return self.mlp(inputs).reshape(n, -1)[:, : self.total]
