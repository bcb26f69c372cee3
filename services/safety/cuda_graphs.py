"""CUDA graphs of the classifier's forward, one per padded input shape.

On a GPU, one batch-1 forward of the 6-layer MiniLM is a few hundred small kernels: launching
them from Python takes longer than running them (4.7 ms eager on an H200 for a 256-token check,
1.9 ms as a graph), and every check on the path to a user's first token pays that. The encoder
pads its inputs to a bounded set of shapes (see encoder.batch_bucket and LENGTH_BUCKET), so a
bounded set of graphs covers every call; each is captured the first time its shape is seen, and
`capture` does the common ones at start.

A call is also one trip to the GPU: inputs go up through pinned buffers and the result comes back
with no synchronisation in between. When the model server shares the GPU, each separate trip
(a pageable copy, an eager kernel followed by a sync) may wait for its time slice, and a check
made of several of them took 10-15 ms instead of 1.5.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)

Forward = Callable[[Tensor, Tensor], Tensor]


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    ids: Tensor
    mask: Tensor
    out: Tensor
    # Pinned host staging, so the copies are asynchronous and queue behind nothing.
    host_ids: Tensor
    host_mask: Tensor
    host_out: Tensor


class GraphedForward:
    """`forward(ids, mask)` through CUDA graphs; eager when the shape is too big or capture fails.

    Takes and returns CPU tensors; `forward` itself runs on device tensors.

    Not thread-safe: the safety service calls it from its one classifier thread.
    """

    def __init__(self, forward: Forward, device: torch.device, max_rows: int) -> None:
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self._forward = forward
        self._device = device
        self._max_rows = max_rows
        # One memory pool for all graphs: they never run at once, and each result is copied out
        # before the next replay, so they can share their intermediate buffers.
        self._pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[tuple[int, int], _Captured] = {}
        self.disabled: str | None = None

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return sorted(self._graphs)

    def __call__(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The forward of CPU tensors `ids`, `mask` [rows, length], returned on the CPU."""
        shape = (ids.shape[0], ids.shape[1])
        captured = self._graphs.get(shape)
        if captured is None and self.disabled is None and shape[0] <= self._max_rows:
            captured = self._capture(shape)
        if captured is None:
            return self._forward(ids.to(self._device), mask.to(self._device)).cpu()
        captured.host_ids.copy_(ids)
        captured.host_mask.copy_(mask)
        stream = torch.cuda.current_stream(self._device)
        captured.ids.copy_(captured.host_ids, non_blocking=True)
        captured.mask.copy_(captured.host_mask, non_blocking=True)
        captured.graph.replay()
        captured.host_out.copy_(captured.out, non_blocking=True)
        stream.synchronize()
        # Cloned: the next call of this shape overwrites the staging buffer.
        return captured.host_out.clone()

    def capture(self, shapes: Iterable[tuple[int, int]]) -> None:
        for shape in shapes:
            if self.disabled is not None:
                return
            if shape not in self._graphs and shape[0] <= self._max_rows:
                self._capture(shape)

    def _capture(self, shape: tuple[int, int]) -> _Captured | None:
        ids = torch.zeros(shape, dtype=torch.long, device=self._device)
        mask = torch.ones(shape, dtype=torch.long, device=self._device)
        try:
            # Warm-up on a side stream (cuBLAS handles, lazy inits), as graph capture requires.
            side = torch.cuda.Stream(self._device)
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._forward(ids, mask)
            torch.cuda.current_stream(self._device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                out = self._forward(ids, mask)
        except RuntimeError as error:
            # A model whose forward cannot be captured (a host sync inside) still works, eagerly.
            self.disabled = f"capture of shape {shape} failed: {error}"
            log.warning("encoder CUDA graphs are off, running eagerly: %s", self.disabled)
            return None
        captured = _Captured(
            graph,
            ids,
            mask,
            out,
            torch.empty(shape, dtype=torch.long, pin_memory=True),
            torch.empty(shape, dtype=torch.long, pin_memory=True),
            torch.empty(out.shape, dtype=out.dtype, pin_memory=True),
        )
        self._graphs[shape] = captured
        return captured
