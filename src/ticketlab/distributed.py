"""One run on several processes: `torchrun --nproc-per-node N -m ticketlab COMMAND ...`.

torchrun starts the processes and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; `setup` joins them
in torch's process group (gloo on the CPU, NCCL on CUDA). Every rank then runs the same command on the
same data and computes the same things in the same order. They differ only in that:

- each rank trains on its shard of every global batch (`shard_bounds`), and PyTorch DDP averages the
  gradients;
- only rank 0 writes files (`is_writer`, checked by `ticketlab.io` and the metrics log), and `gate`
  makes every rank take the branch rank 0 takes for a file that may or may not exist yet
  (`ticketlab.runs.ensure`: compute-if-absent, then read what rank 0 wrote);
- the training loss and accuracy are summed over ranks (`all_sum`), masks are checked equal by digest
  (`check_same`), and BatchNorm buffers come from rank 0 before an evaluation.

Outside torchrun all of this is a no-op: one process, rank 0 of 1.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import torch.distributed as dist

from ticketlab.errors import CheckpointError, ConfigError


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_writer() -> bool:
    """Whether this process writes files: rank 0, or the only process."""
    return rank() == 0


def launched() -> bool:
    """Started by torchrun (or by hand with its environment) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "auto") -> Optional[str]:
    """Join the process group that torchrun's environment describes; returns the device this rank should
    use (``cuda:<local rank>`` where CUDA is asked for or ``auto`` finds it), or None outside torchrun."""
    if not launched() or active():
        return None
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run without torchrun")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return f"cuda:{local}" if cuda else ("cpu" if device == "auto" else device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def _wire(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on the device the backend communicates from: the CPU for gloo, this rank's GPU for NCCL."""
    if dist.get_backend() == "nccl":
        return tensor.to(torch.device("cuda", torch.cuda.current_device()))
    return tensor.cpu()


def gate(condition: bool) -> bool:
    """Rank 0's value of ``condition`` on every rank (a file's existence before deciding to make it)."""
    if not active():
        return condition
    flag = _wire(torch.tensor([1 if condition else 0], dtype=torch.int64))
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def rank0_first(make, what: str):
    """``make()`` on rank 0, then on the other ranks once it has succeeded (a download or a cache that
    rank 0 writes and the others read); an error on rank 0 stops every rank."""
    if not active():
        return make()
    failure, value = None, None
    if is_writer():
        try:
            value = make()
        except Exception as exc:  # noqa: BLE001  (re-raised below, after telling the others)
            failure = exc
    if not gate(failure is None):
        if failure is not None:
            raise failure
        raise CheckpointError(f"rank 0 could not {what}; see its error")
    return value if is_writer() else make()


def from_rank0(obj):
    """Rank 0's ``obj`` (any picklable value) on every rank."""
    if not active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over ranks (a copy, on ``tensor``'s device)."""
    if not active():
        return tensor
    out = _wire(tensor.detach().clone())
    dist.all_reduce(out)
    return out.to(tensor.device)


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` stacked in rank order (on ``tensor``'s device)."""
    if not active():
        return tensor.unsqueeze(0)
    mine = _wire(tensor.detach().clone())
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(parts, mine)
    return torch.stack(parts).to(tensor.device)


def check_same(digest: str, what: str) -> None:
    """Raise unless every rank holds the same ``digest`` (a mask computed on each rank)."""
    if not active():
        return
    digests = [None] * world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        raise CheckpointError(f"the {what} differs between ranks ({', '.join(d[:8] for d in digests)}): the ranks "
                              "computed different things from the same inputs; check that they run the same "
                              "command on the same data")


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank."""
    if not active():
        return
    for buffer in module.buffers():
        staged = _wire(buffer)
        dist.broadcast(staged, src=0)
        if staged is not buffer:
            buffer.copy_(staged)


def shard_bounds(n: int, world: Optional[int] = None, of_rank: Optional[int] = None) -> tuple:
    """``(start, end)`` of a rank's part of a global batch of ``n`` examples: contiguous, the first ranks
    one larger when ``n`` does not divide (as `torch.tensor_split`). ``world`` and ``of_rank`` default to
    this process's; pass them where the process group is not joined (a DataLoader worker)."""
    world = world_size() if world is None else world
    r = rank() if of_rank is None else of_rank
    size, extra = divmod(n, world)
    start = r * size + min(r, extra)
    return start, start + size + (1 if r < extra else 0)


__all__ = ["active", "rank", "world_size", "is_writer", "launched", "setup", "teardown", "barrier", "gate",
           "rank0_first", "from_rank0", "all_sum", "all_gather", "check_same", "broadcast_buffers", "shard_bounds"]
