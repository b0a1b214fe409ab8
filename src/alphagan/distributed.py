"""Data-parallel training over processes started by torchrun: NCCL on CUDA, gloo on CPU.

Every rank holds the whole VAE-GAN and trains on its own equal shard of each global batch
(``train.batch_size`` is the global batch). What is shared between ranks, and how, was
chosen deliberately:

* **Gradients are averaged explicitly, not by DistributedDataParallel.** One training step
  runs one shared forward and then two or three backward passes, each restricted with
  ``inputs=`` to one player's parameters and with ``retain_graph``. DDP's reducer expects
  one backward per forward that reaches every parameter it wraps (or it needs
  ``find_unused_parameters`` and still all-reduces at the first backward, before the
  second one has added its share). Instead :meth:`Distributed.average_gradients` waits for
  all backward passes, then all-reduces every gradient of both optimisers in one flat
  bucket (one collective per step) and divides by the world size. With equal per-rank
  batches, the mean of the per-rank mean losses is the global-batch mean, so each
  optimiser steps on the global-batch gradient. (DDP overlaps that reduction with the
  backward pass; this model is small enough that one bucket after it costs little.)
* **Batch norm is over the global batch.** The encoder's and decoder's BatchNorm layers
  (and the discriminator's, when spectral norm is off) become :class:`GlobalBatchNorm`,
  whose training statistics are all-reduced over the ranks, with a backward pass that
  all-reduces too: a rank's batch-norm sees the same statistics a single process would on
  the whole global batch. ``torch.nn.SyncBatchNorm`` does the same but refuses CPU tensors,
  and the CPU (gloo) path is the one tests can run; one implementation serves both.
* **Buffers follow rank 0.** Spectral norm's power-iteration vectors (``weight_u``,
  ``weight_v``) depend only on the weights, and batch-norm running statistics only on the
  global statistics, so they are identical on every rank by construction; as DDP's
  ``broadcast_buffers`` does, they are broadcast from rank 0 after each step anyway, so
  different kernels on different nodes cannot make them drift. Parameters are broadcast
  from rank 0 once at the start (after any resume), and every checkpoint first checks that
  all ranks still hold bit-identical weights (:meth:`Distributed.check_in_sync`).
* **Noise is per rank and per step.** Each rank draws its prior latents,
  reparameterisation noise and DiffAugment draws from the torch generator seeded by
  ``(seed, rank, step)`` (:meth:`Distributed.step_seed`): deterministic, different on each
  rank, and resumable with no saved random state.
* **Rank 0 alone writes** checkpoints, reports and MLflow records; the others only train.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from alphagan.envvars import LAUNCHED_BY, environment_set, launched_world  # noqa: F401 - re-exported
from alphagan.errors import AlphaGanError


class DistributedError(AlphaGanError):
    """A data-parallel run cannot start or went wrong (bad world size, drifted ranks, failed workers)."""


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """The images each rank trains on per step; a global batch that does not split evenly is refused
    (unequal shards would weight some images more than others in the global mean)."""
    if global_batch % world_size:
        raise DistributedError(f"batch size {global_batch} does not divide evenly over {world_size} processes; "
                               f"set train.batch_size to a multiple of {world_size}")
    return global_batch // world_size


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward is an all-reduce (sum) of the gradients: the gradient
    of the sum of every rank's loss, which :meth:`Distributed.average_gradients` then averages."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are over every rank's batch together.

    Two passes (sum, then sum of squared deviations from the global mean), each one
    all-reduce forward and one backward: exact like a single process's batch norm, without
    the cancellation of E[x^2] - E[x]^2. Statistics are computed in fp32 whatever the
    autocast dtype. Running statistics update as ``nn.BatchNorm2d``'s do (unbiased variance
    over the global count), so they stay identical on every rank. Without an initialised
    process group of two or more ranks, and in eval mode, it is plain ``nn.BatchNorm2d``;
    its state dict has the same keys, so checkpoints load either way.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels, dims = x.shape[1], (0, 2, 3)
        values = x.float()
        count = values.new_tensor([x.numel() // channels])
        first = _SumOverRanks.apply(torch.cat([values.sum(dims), count]))
        n = first[-1].detach()
        mean = first[:-1] / n
        centred = values - mean.view(1, channels, 1, 1)
        var = _SumOverRanks.apply(centred.square().sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var.detach() * n / (n - 1)).to(self.running_var.dtype), factor)
        out = centred * torch.rsqrt(var + self.eps).view(1, channels, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, channels, 1, 1) + self.bias.view(1, channels, 1, 1)
        return out.to(x.dtype)


def synchronise_batch_norm(module: nn.Module) -> int:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`GlobalBatchNorm` holding the
    very same parameter and buffer tensors (optimisers and EMA keep pointing at them); returns
    how many were replaced."""
    replaced = 0
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats,
                                     device=child.running_mean.device if child.running_mean is not None else None)
            if child.affine:
                synced.weight, synced.bias = child.weight, child.bias
            if child.track_running_stats:
                synced.running_mean, synced.running_var = child.running_mean, child.running_var
                synced.num_batches_tracked = child.num_batches_tracked
            synced.train(child.training)
            setattr(module, name, synced)
            replaced += 1
        else:
            replaced += synchronise_batch_norm(child)
    return replaced


def _by_dtype(tensors: Iterable[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault(tensor.dtype, []).append(tensor)
    yield from groups.values()


def _state_tensors(modules: Iterable[nn.Module], parameters: bool = True) -> list[torch.Tensor]:
    tensors: list[torch.Tensor] = []
    for module in modules:
        if parameters:
            tensors += [p.data for p in module.parameters()]
        tensors += list(module.buffers())
    return tensors


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run, and the collectives the training loop uses."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and talks to the tracker."""
        return self.rank == 0

    def shard(self, global_rows: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of one global batch's rows (equal shares: see :func:`per_rank_batch`)."""
        size = per_rank_batch(len(global_rows), self.world_size)
        return global_rows[self.rank * size:(self.rank + 1) * size]

    def step_seed(self, seed: int, step: int) -> int:
        """The torch seed of this rank's random draws at ``step``: a function of (seed, rank, step) alone."""
        return step_seed(seed, self.rank, step)

    def prepare(self, modules: Iterable[nn.Module]) -> None:
        """Batch norm over the global batch, and every rank starting from rank 0's weights and buffers."""
        modules = list(modules)
        for module in modules:
            synchronise_batch_norm(module)
        self._broadcast(_state_tensors(modules))

    def average_losses(self, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The global-batch mean of each (per-rank mean) loss, detached; the same on every rank."""
        stacked = torch.stack([value.detach().float() for value in named.values()])
        dist.all_reduce(stacked)
        stacked /= self.world_size
        return dict(zip(named, stacked.unbind(), strict=True))

    @torch.no_grad()
    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks: one flat all-reduce per dtype."""
        grads = [p.grad for p in parameters if p.grad is not None]
        for group in _by_dtype(grads):
            flat = _flatten_dense_tensors(group)
            dist.all_reduce(flat)
            flat /= self.world_size
            for grad, synced in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
                grad.copy_(synced)

    def broadcast_buffers(self, modules: Iterable[nn.Module]) -> None:
        """Every buffer (spectral norm's u and v, batch-norm statistics) set to rank 0's."""
        self._broadcast(_state_tensors(modules, parameters=False))

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (so all ranks stop at the same step)."""
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        """Wait for every rank (so that a file rank 0 has just written is there for all)."""
        dist.barrier()

    def check_in_sync(self, modules: Iterable[nn.Module], step: int) -> None:
        """Refuse to go on when the ranks' weights and buffers are no longer bit-identical: a
        checkpoint of rank 0 would then not be the model the run trained."""
        digest = hashlib.sha256()
        for tensor in _state_tensors(modules):
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests: list[str | None] = [None] * self.world_size
        dist.all_gather_object(digests, digest.hexdigest())
        if len(set(digests)) > 1:
            differing = [rank for rank, value in enumerate(digests) if value != digests[0]]
            raise DistributedError(f"step {step}: the weights of rank(s) {differing} differ from rank 0's; "
                                   "stopping before a checkpoint of one rank is taken for the run's model")

    @torch.no_grad()
    def _broadcast(self, tensors: list[torch.Tensor]) -> None:
        for group in _by_dtype(tensors):
            flat = _flatten_dense_tensors(group)
            dist.broadcast(flat, src=0)
            for tensor, synced in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
                tensor.copy_(synced)


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit torch seed from (seed, rank, step), well mixed by numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(2, np.uint32).view(np.uint64)[0] >> np.uint64(1))


def start(device: torch.device) -> Distributed | None:
    """Join the process group torchrun set up (NCCL for CUDA, gloo for CPU); None outside torchrun
    or in a world of one process (then the plain single-process loop runs, bit for bit).

    On CUDA each process takes the GPU of its local rank.
    """
    world = launched_world()
    if world is None or world[1] == 1:
        return None
    rank, world_size, local_rank = world
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                                   "start at most one process per GPU (train.nproc, or torchrun's --nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def stop() -> None:
    """Leave the process group (every rank, at the end of a run or on an error)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, module: str, args: list[str]) -> None:
    """Run ``python -m module args`` in ``nproc`` processes on this machine, exactly as
    ``torchrun --standalone --nproc-per-node=nproc -m module args`` would (torchrun's own
    argument parser and launcher, one node, a local rendezvous on a free port, no restarts).

    The workers find ``module`` wherever this process found it, and each gets an equal
    share of the CPU cores for its threads (torchrun's default is one thread) unless
    ``OMP_NUM_THREADS`` is set. A failed worker becomes a one-line :class:`DistributedError`
    (its own message is printed above it, on the shared stderr).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    package_root = str(Path(importlib.import_module(module.split(".")[0]).__path__[0]).resolve().parent)
    path = os.pathsep.join([package_root, *filter(None, [os.environ.get("PYTHONPATH")])])
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    arguments = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--module", module, *args])
    with environment_set(PYTHONPATH=path, OMP_NUM_THREADS=threads):
        try:
            run(arguments)
        except ChildFailedError as exc:
            rank, failure = min(exc.failures.items())
            raise DistributedError(f"{len(exc.failures)} of {nproc} worker processes failed (first: rank {rank}, "
                                   f"exit code {failure.exitcode}); the workers' messages are above") from None
    sys.stderr.flush()
