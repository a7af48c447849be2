"""Several processes under ``torchrun``: which rank this is, its device, and the few collectives the runs use.

A plain ``python -m fusionframes ...`` is one process (rank 0 of 1) and starts no process group. Under torchrun
(``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set, single node or several through its rendezvous) the group is started with
NCCL when CUDA is there and gloo otherwise. Noise never comes from a rank's own generator: every rank draws the same
seeded per-stage streams, so a video does not depend on how many processes made it.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError


@dataclass(frozen=True)
class Ranks:
    """This process's place among ``world`` processes. ``guidance``: one video's guidance branches run on different
    ranks (:class:`BranchParallel`); off, the ranks share only its decoding, and the video is bit for bit the
    single-process one."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    guidance: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, count: int) -> list[int]:
        """This rank's items of ``count``: every ``world``-th, starting at its rank."""
        return list(range(self.rank, count, self.world))

    def device(self, requested: str) -> str:
        """``cuda`` means this rank's GPU (its local rank) when there are several processes."""
        if self.world > 1 and requested == "cuda":
            return f"cuda:{self.local_rank % max(torch.cuda.device_count(), 1)}"
        return requested

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return values


#: a plain run: one process
ONE_PROCESS = Ranks()


def from_environment() -> Ranks:
    """The ranks torchrun describes in the environment (one process without it); starts the process group."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise InputError(f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them): "
                         f"{error}.") from None
    if world <= 1:
        return ONE_PROCESS
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        # NCCL needs a GPU per process of a node; more processes than GPUs (e.g. 2 on one GPU) go through gloo
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        backend = "nccl" if cuda and torch.cuda.device_count() >= per_node else "gloo"
        # ranks wait for each other at the end of a request list: allow for long videos on the slowest rank
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=12))
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank)


def finish(ranks: Ranks) -> None:
    """Ends the process group this process started (a clean exit for torchrun)."""
    if ranks.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shared_clips(clips: list[torch.Tensor], decode: Callable[[torch.Tensor], Iterator[torch.Tensor]],
                 ranks: Ranks) -> Iterator[torch.Tensor]:
    """``decode`` of every clip of ``clips``, the clips shared out over the ranks (rank r decodes r, r + world, ...),
    yielded on rank 0 in order, ``world`` clips at a time (its memory holds one round); the other ranks yield
    nothing. Each clip is decoded alone either way, so the frames are those of one process."""
    if ranks.world == 1:
        for clip in clips:
            yield from decode(clip)
        return
    for start in range(0, len(clips), ranks.world):
        index = start + ranks.rank
        mine = list(decode(clips[index])) if index < len(clips) else []
        gathered: list[Any] | None = [None] * ranks.world if ranks.main else None
        torch.distributed.gather_object(mine, gathered, dst=0)
        if ranks.main:
            for decoded in gathered:
                yield from decoded


class BranchParallel:
    """A U-Net whose guidance branches run on different ranks: a call with ``branches`` branches batched along dim 0
    (the guided denoisers' layout) computes on this rank only the branches it owns (rank r: r, r + world, ...) and
    receives the others from their owners, so every rank returns the whole batched output. Each branch is computed
    alone, with exactly the inputs it has in the batch, but a smaller batch may take other kernels: the result
    can differ from the batched one in the last bits, which guidance then amplifies (measured on the CPU with the
    random-weight demo models: 1.0 latents within 2e-6 and 8-bit frames within 1; 1.1 frames 1.6 apart on
    average, 19 at most). Everything else is the wrapped network's."""

    def __init__(self, network: Any, ranks: Ranks, branches: int) -> None:
        self.network, self.ranks, self.branches = network, ranks, branches

    def __getattr__(self, name: str) -> Any:
        return getattr(self.network, name)

    def __call__(self, *args: Any) -> torch.Tensor:
        return self._split(self.network, args)

    def forward_image(self, *args: Any) -> torch.Tensor:
        return self._split(self.network.forward_image, args)

    def _split(self, function: Callable[..., torch.Tensor], args: tuple) -> torch.Tensor:
        batch = args[0].shape[0]
        if batch % self.branches:
            raise ValueError(f"a batch of {batch} is not {self.branches} guidance branches")
        size = batch // self.branches

        def branch(index: int) -> torch.Tensor:
            return function(*(a[index * size:(index + 1) * size]
                              if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == batch else a
                              for a in args))

        outputs: list[torch.Tensor | None] = [None] * self.branches
        for index in range(self.ranks.rank, self.branches, self.ranks.world):
            outputs[index] = branch(index).contiguous()
        template = next((o for o in outputs if o is not None), None)
        shape, dtype = _agree_on_output(template, self.ranks)
        for index in range(self.branches):
            if outputs[index] is None:
                outputs[index] = torch.empty(shape, dtype=dtype, device=args[0].device)
            _broadcast(outputs[index], index % self.ranks.world)
        return torch.cat(outputs)


def _broadcast(tensor: torch.Tensor, source: int) -> None:
    """Broadcast in place; through host memory when the group is gloo and the tensor is on a GPU."""
    if tensor.is_cuda and torch.distributed.get_backend() == "gloo":
        host = tensor.cpu()
        torch.distributed.broadcast(host, src=source)
        tensor.copy_(host)
    else:
        torch.distributed.broadcast(tensor, src=source)


def _agree_on_output(template: torch.Tensor | None, ranks: Ranks) -> tuple[tuple[int, ...], torch.dtype]:
    """The shape and dtype of one branch's output, from rank 0 (which always owns branch 0)."""
    found = [None if template is None else (tuple(template.shape), template.dtype)]
    torch.distributed.broadcast_object_list(found, src=0)
    return found[0]
