"""Batches for a training step as a pure function of (seed, stage, step, rank): resumable
without sampler state, disjoint across DDP ranks."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset


def collate_triplets(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack the float volumes of a list of {"healthy", "lesioned", "mask"} dicts."""
    keys = [k for k in ("healthy", "lesioned", "mask") if k in items[0]]
    return {k: torch.stack([torch.as_tensor(it[k], dtype=torch.float32) for it in items]) for k in keys}


def is_map_style(dataset: Any) -> bool:
    return not isinstance(dataset, IterableDataset) and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")


def mix_seed(*values: int) -> int:
    """A well-spread 32-bit seed from a tuple of non-negative ints."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


class ShardedBatchSampler:
    """Index batches for steps [start, stop) of one stage on one rank, a pure function of the step.

    Each epoch is a seeded permutation of the dataset; a step takes ``batch * world`` consecutive
    indices of it (wrapping around) and the rank its own slice, so resuming at any step needs no
    sampler state, and ranks never share a sample within a step (given at least batch * world
    samples).
    """

    def __init__(
        self, length: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world_size: int = 1
    ):
        if length < 1:
            raise ValueError("the training dataset is empty")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self.per_step = batch_size * world_size
        self.steps_per_epoch = max(1, math.ceil(length / self.per_step))
        self._epoch, self._perm = -1, None

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.indices(step)

    def indices(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.length, generator=gen).tolist()
        first = k * self.per_step + self.rank * self.batch_size
        return [self._perm[(first + j) % self.length] for j in range(self.batch_size)]


def default_num_workers(device: torch.device | str, world_size: int = 1) -> int:
    """DataLoader workers synthesising triplets: none on the CPU (they would compete with the
    training for the same cores), a few per GPU otherwise (synthesis runs on the CPU and would
    leave the GPU waiting)."""
    if torch.device(device).type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // max(1, world_size) - 1))


def batches(
    dataset: Any,
    batch_size: int,
    seed: int,
    start: int,
    stop: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterable[dict[str, torch.Tensor]]:
    """The batches of steps [start, stop) for this rank: index-sharded for map-style datasets
    (worker processes may prefetch them: items depend on their index only), round-robin for
    iterables (re-iterated from the start, the steps already done skipped)."""
    if is_map_style(dataset):
        sampler = ShardedBatchSampler(len(dataset), batch_size, seed, start, stop, rank, world_size)
        return DataLoader(
            dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_triplets, pin_memory=pin_memory
        )
    return _stream_batches(dataset, batch_size, start, stop, rank, world_size)


def _stream_batches(dataset, batch_size, start, stop, rank, world_size) -> Iterator[dict[str, torch.Tensor]]:
    per_step = batch_size * world_size
    items = iter(dataset)
    for _ in itertools.islice(items, start * per_step):
        pass
    for step in range(start, stop):
        chunk = list(itertools.islice(items, per_step))
        if len(chunk) < per_step:
            raise ValueError(
                f"the iterable dataset ran out at step {step}; give one that yields at least {stop * per_step} items"
            )
        yield collate_triplets(chunk[rank * batch_size : (rank + 1) * batch_size])


def first_items(dataset: Any, count: int, rank: int, world_size: int) -> Iterator[dict[str, Any]]:
    """The first ``count`` items, this rank's share (i % world == rank)."""
    if is_map_style(dataset):
        source = (dataset[i] for i in range(min(count, len(dataset))))
    else:
        source = itertools.islice(iter(dataset), count)
    for i, item in enumerate(source):
        if i % world_size == rank:
            yield item


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def random_crop(volumes: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``size``^3 cube from each (C, X, Y, Z) volume of a batch; ``size`` 0 keeps all.

    Each sample gets its own corner, drawn uniformly, so that a batch covers several regions.
    """
    if size <= 0 or all(s <= size for s in volumes.shape[-3:]):
        return volumes
    crops = []
    for volume in volumes:
        corner = [int(torch.randint(0, s - size + 1, (1,), generator=generator)) for s in volume.shape[-3:]]
        crops.append(
            volume[..., corner[0] : corner[0] + size, corner[1] : corner[1] + size, corner[2] : corner[2] + size]
        )
    return torch.stack(crops)
