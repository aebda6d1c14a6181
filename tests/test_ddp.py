"""Two CPU processes (gloo) train every stage under DDP; both ranks must end with equal weights.

The workers join through the torchrun environment variables (WORLD_SIZE, RANK, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), so this exercises the same path as ``torchrun --nproc_per_node 2``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

WORLD = 2
PLAN = {"autoencoder": 2, "lesion": 2, "brain": 2}


def _toy_triplets(n: int = 8, grid=(32, 32, 32), seed: int = 0) -> list[dict]:
    """Shaded balls with a darker ball lesion; every 4th sample healthy."""
    g = torch.Generator().manual_seed(seed)
    zz, yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in grid], indexing="ij")
    items = []
    for i in range(n):
        c, lc = (torch.rand(3, generator=g) - 0.5) * 0.2, (torch.rand(3, generator=g) - 0.5) * 0.6
        d = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2).sqrt()
        brain = torch.sigmoid((0.75 - d) * 20) * (0.6 + 0.3 * torch.cos(3 * d + i))
        mask = (((zz - lc[0]) ** 2 + (yy - lc[1]) ** 2 + (xx - lc[2]) ** 2).sqrt() < 0.25).float() * float(i % 4 != 0)
        items.append({"healthy": brain[None], "lesioned": (brain * (1 - 0.6 * mask))[None], "mask": mask[None]})
    return items


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: torchrun's environment, then the public entry point, then dump what it holds."""
    os.environ.update(
        WORLD_SIZE=str(WORLD),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
    )
    torch.set_num_threads(1)
    from usb_model import train as T
    from usb_model.config import load_preset

    cfg = load_preset("tiny")
    trainer = T.Trainer(
        cfg, _toy_triplets(), Path(out_dir) / "run", device="cpu", log_every=1, save_every=1, latent_scale_samples=8
    )
    assert trainer.ctx.world_size == WORLD and trainer.ctx.rank == rank
    assert torch.distributed.get_backend() == "gloo"
    try:
        trainer.run(PLAN)
        held = {f"networks.{k}": v for k, v in trainer.networks.state_dict().items()}
        held.update({f"discriminator.{k}": v for k, v in trainer.discriminator.state_dict().items()})
        for name, ema in trainer.ema.items():
            held.update({f"ema.{name}.{k}": v for k, v in ema.module.state_dict().items()})
        save_file({k: v.detach().contiguous() for k, v in held.items()}, str(Path(out_dir) / f"rank{rank}.safetensors"))
    finally:
        trainer.close()


@pytest.mark.slow
def test_two_gloo_ranks_train_to_identical_weights(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    different = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not different, f"{len(different)} tensors differ between ranks, e.g. {different[:3]}"

    # Training happened, and rank 0 alone wrote: one log row per step, a checkpoint of the EMA weights.
    from usb_model import train as T

    rows = T.read_log(tmp_path / "run" / "log.tsv")
    assert [(r["stage"], r["step"]) for r in rows] == [(s, i) for s in T.STAGES for i in (1, 2)]
    assert float(rank0["networks.latent_scale"]) != 1.0
    saved = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    for k, v in saved.items():
        if k.startswith(("lesion.", "brain.")):
            assert torch.equal(v, rank0[f"ema.{k}"]), k
        else:
            assert torch.equal(v, rank0[f"networks.{k}"]), k
    from usb_model.checkpoint import load_state

    state = load_state(tmp_path / "run" / "state", "trainer")
    assert state["progress"] == PLAN and state["world_size"] == WORLD
    for k, v in state["networks"].items():  # the resumable state holds the online weights
        assert torch.equal(v, rank0[f"networks.{k}"]), k
