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


class HyperNetwork(nn.Module):
    """Maps task ``t``'s learned embedding ``e_t`` to ``total`` mask scores.

    Unchunked (``chunks=None``, the original HyperMask design): an MLP ``e_t -> hidden -> total``, whose last
    layer alone has ``hidden[-1] * total`` weights. Chunked (von Oswald et al., ICLR 2020): the output is
    cut into ``chunks`` pieces of ``ceil(total / chunks)`` scores; piece ``k`` is ``MLP([e_t, c_k])`` with a
    learned chunk embedding ``c_k`` shared by all tasks, so the MLP's last layer is ``chunks`` times
    smaller.

    Args:
        total: number of scores (masked target entries).
        num_tasks: number of task embeddings.
        embedding_dim: size of each task embedding.
        hidden: widths of the MLP's hidden layers (ReLU).
        chunks: number of output chunks, or None for the unchunked design.
        chunk_embedding_dim: size of each chunk embedding.
    """

    def __init__(
        self,
        total: int,
        num_tasks: int,
        embedding_dim: int = 24,
        hidden: Sequence[int] = (100, 100),
        chunks: int | None = 1024,
        chunk_embedding_dim: int = 16,
    ) -> None:
        super().__init__()
        if total < 1:
            raise MaskclError("the target has no maskable weights")
        if chunks is not None and chunks < 1:
            raise MaskclError(f"chunks must be >= 1 (or None: unchunked), got {chunks}")
        self.total = total
        self.task_embeddings = nn.Parameter(torch.randn(num_tasks, embedding_dim) * 0.1)
        if chunks is None:
            self.chunk_size, inputs = total, embedding_dim
            self.chunk_embeddings = None
        else:
            chunks = min(chunks, total)
            self.chunk_size, inputs = math.ceil(total / chunks), embedding_dim + chunk_embedding_dim
            self.chunk_embeddings = nn.Parameter(torch.randn(chunks, chunk_embedding_dim) * 0.1)
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
