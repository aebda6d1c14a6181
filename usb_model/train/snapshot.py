"""A training state small enough to commit: the campaign's way across sessions.

The bundled model is trained in the background of many sessions, each ending hard; what the
next one resumes from must live in the repository, where every commit of it stays forever. A
full ``usb-train`` state holds float32 weights, EMA copies and Adam moments of all three
networks, most of which a resume does not need:

- networks not trained yet (their stage has no steps) and the unused discriminator (no
  adversarial weight) are dropped: ``unpack`` rebuilds them from the run's seed, exactly as a
  fresh trainer would (not in a fine-tune, ``usb-train --init-checkpoint``: there they hold the
  checkpoint's weights and are kept);
- a finished stage keeps only what later stages read (the autoencoder's weights, the lesion
  net's EMA): its online weights, where unused, and its optimizer moments are dropped;
- weights are stored in float16, Adam's second moments in bfloat16 (they underflow in
  float16), counters as they are; Adam's first moments are dropped and restart at zero (with
  beta1 = 0.9 they rebuild within a few dozen steps, and until then the updates are smaller,
  never larger: the second moment and the step count are kept);
- each network, EMA and optimizer is a file of its own (``trainer.<part>.safetensors``), so
  what a stage no longer changes (the frozen autoencoder, the finished lesion net's EMA) is
  the same file from one commit to the next, and git stores it once.

A resume from a snapshot is therefore not bit-identical to an uninterrupted run, only close
(half-precision rounding and a first-moment restart once per session); the learning curve
records each resume.

    python -m usb_model.train.snapshot pack RUN_DIR SNAPSHOT_DIR
    python -m usb_model.train.snapshot unpack SNAPSHOT_DIR RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_directory, load_state, save_state
from ..config import USBConfig
from .trainer import LOG_FILE, STATE_DIR, STATE_NAME, Trainer

SNAPSHOT_FORMAT = "usb-train-snapshot/2"
# /1: one trainer.safetensors holding every part, Adam's first moments kept; still unpacked.
READABLE_FORMATS = ("usb-train-snapshot/1", SNAPSHOT_FORMAT)
NETWORKS = ("autoencoder", "lesion", "brain")


def _dropped_parts(state: dict[str, Any]) -> list[str]:
    """The parts of a state a resume can rebuild or never reads again, by name."""
    progress = state["progress"]
    training = state["config"]["training"]
    dropped = []
    for name in ("lesion", "brain"):
        # Untrained networks are the seed's, unless the run started from a checkpoint's.
        if progress[name] == 0 and not state.get("initialised_from"):
            dropped += [f"networks.{name}", f"ema.{name}"]
    if progress["brain"] > 0:  # the brain stage reads the lesion net's EMA only
        dropped += ["networks.lesion", "optimizers.lesion"]
    if progress["lesion"] > 0 or progress["brain"] > 0:  # the autoencoder is frozen for good
        dropped += ["optimizers.autoencoder", "optimizers.discriminator", "discriminator"]
    if float(training.get("vae_adv_weight", 0.0)) == 0.0:
        dropped += ["discriminator", "optimizers.discriminator"]
    return sorted(set(dropped))


def _select(state: dict[str, Any], part: str) -> tuple[dict[str, Any], str]:
    """The dict holding ``part`` and its key: networks.lesion lives in state["networks"] as a
    prefix of flat names, the others are nested keys."""
    top, _, name = part.partition(".")
    if top == "networks":
        return state["networks"], name + "."
    if top == "ema":
        return state["ema"][name], "weights"
    if top == "optimizers":
        return state["optimizers"][name], "state"
    return state, top


def _drop(state: dict[str, Any], part: str) -> None:
    holder, key = _select(state, part)
    if key.endswith("."):
        for name in [k for k in holder if k.startswith(key)]:
            holder[name] = None
    elif key == "state":
        holder["state"] = {}
    else:
        holder[key] = None


def _cast(obj: Any, path: str = "") -> Any:
    """float32 tensors to float16 (weights) or bfloat16 (optimizer moments); others as they are."""
    if isinstance(obj, torch.Tensor):
        if obj.dtype != torch.float32 or obj.dim() == 0:
            return obj
        return obj.to(torch.bfloat16 if "exp_avg" in path else torch.float16)
    if isinstance(obj, dict):
        return {k: _cast(v, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cast(v, path) for v in obj]
    return obj


def _drop_first_moments(state: dict[str, Any]) -> int:
    """Adam's ``exp_avg`` to None in every optimizer state; returns how many were dropped."""
    dropped = 0
    for optimizer in state["optimizers"].values():
        for entry in (optimizer or {}).get("state", {}).values():
            if isinstance(entry, dict) and entry.get("exp_avg") is not None:
                entry["exp_avg"] = None
                dropped += 1
    return dropped


def _zero_first_moments(state: dict[str, Any]) -> None:
    """A dropped ``exp_avg`` back as zeros shaped like its ``exp_avg_sq``."""
    for optimizer in state["optimizers"].values():
        for entry in (optimizer or {}).get("state", {}).values():
            if isinstance(entry, dict) and "exp_avg" in entry and entry["exp_avg"] is None:
                entry["exp_avg"] = torch.zeros_like(entry["exp_avg_sq"])


def _parts(state: dict[str, Any]) -> list[str]:
    """The parts written as files of their own: one per network, EMA and optimizer, and the latent
    anchor."""
    names = [f"networks.{n}" for n in NETWORKS]
    names += [f"ema.{n}" for n in state.get("ema", {})]
    names += [f"optimizers.{n}" for n in state.get("optimizers", {})]
    if state.get("anchor") is not None:
        names.append("anchor")  # the frozen latent anchor: the same file from one pack to the next
    return names


def _has_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, dict):
        return any(_has_tensor(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_tensor(v) for v in obj)
    return False


def _take(state: dict[str, Any], part: str) -> dict[str, Any] | None:
    """Remove ``part`` from ``state`` and return it as a dict of its own (None when it holds no
    tensor: such a part stays where it is)."""
    holder, key = _select(state, part)
    if key.endswith("."):
        sub = {k: v for k, v in holder.items() if k.startswith(key)}
        if not _has_tensor(sub):
            return None
        for k in sub:
            del holder[k]
        return sub
    if not _has_tensor(holder.get(key)):
        return None
    return {"value": holder.pop(key)}


def _put(state: dict[str, Any], part: str, sub: dict[str, Any]) -> None:
    holder, key = _select(state, part)
    if key.endswith("."):
        holder.update(sub)
    else:
        holder[key] = sub["value"]


def _restore(obj: Any, fresh: Any) -> Any:
    """Half-precision tensors back to float32; dropped entries (None) from the fresh state."""
    if obj is None:
        return fresh
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype in (torch.float16, torch.bfloat16) else obj
    if isinstance(obj, dict):
        fresh = fresh if isinstance(fresh, dict) else {}
        return {k: _restore(v, fresh.get(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        fresh = fresh if isinstance(fresh, list) else [None] * len(obj)
        return [_restore(v, f) for v, f in zip(obj, fresh)]
    return obj


def pack(run_dir: str | Path, snapshot_dir: str | Path) -> dict[str, Any]:
    """Write the compact state of ``run_dir`` to ``snapshot_dir``; returns its description."""
    run_dir = Path(run_dir)
    state = load_state(run_dir / STATE_DIR, STATE_NAME)
    dropped = _dropped_parts(state)
    for part in dropped:
        _drop(state, part)
    first_moments = _drop_first_moments(state)
    state = _cast(state)
    parts = {}
    for part in _parts(state):
        sub = _take(state, part)
        if sub is not None:
            parts[part] = sub
    info = {
        "format": SNAPSHOT_FORMAT,
        "config": state["config"]["name"],
        "progress": state["progress"],
        "seconds": state["seconds"],
        "dropped": dropped,
        "dropped_first_moments": first_moments,
        "parts": sorted(parts),
    }

    def write(tmp: Path) -> None:
        save_state(state, tmp, STATE_NAME)
        for part, sub in parts.items():
            save_state(sub, tmp, f"{STATE_NAME}.{part}")
        if (run_dir / LOG_FILE).is_file():
            shutil.copy2(run_dir / LOG_FILE, tmp / LOG_FILE)
        (tmp / "snapshot.json").write_text(json.dumps(info, indent=2) + "\n")

    atomic_directory(snapshot_dir, write)
    info["megabytes"] = round(sum(p.stat().st_size for p in Path(snapshot_dir).iterdir()) / 1e6, 2)
    return info


def unpack(snapshot_dir: str | Path, run_dir: str | Path) -> dict[str, Any]:
    """Rebuild a full training state in ``run_dir`` from a snapshot (``usb-train`` resumes it)."""
    snapshot_dir, run_dir = Path(snapshot_dir), Path(run_dir)
    info = json.loads((snapshot_dir / "snapshot.json").read_text())
    if info.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{snapshot_dir} is not a training snapshot ({info.get('format')!r})")
    state = load_state(snapshot_dir, STATE_NAME)
    for part in info.get("parts", []):
        _put(state, part, load_state(snapshot_dir, f"{STATE_NAME}.{part}"))
    cfg = USBConfig.from_dict(state["config"])
    trainer = Trainer(cfg, [], run_dir, seed=int(state["seed"]), training_data={}, template=None)
    try:
        full = _restore(state, trainer.state_dict())
    finally:
        trainer.close()
    _zero_first_moments(full)
    atomic_directory(run_dir / STATE_DIR, lambda tmp: save_state(full, tmp, STATE_NAME))
    if (snapshot_dir / LOG_FILE).is_file():
        shutil.copy2(snapshot_dir / LOG_FILE, run_dir / LOG_FILE)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m usb_model.train.snapshot", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for action, a, b in (("pack", "run_dir", "snapshot_dir"), ("unpack", "snapshot_dir", "run_dir")):
        p = sub.add_parser(action)
        p.add_argument(a, type=Path)
        p.add_argument(b, type=Path)
    args = parser.parse_args(argv)
    if args.action == "pack":
        print(json.dumps(pack(args.run_dir, args.snapshot_dir)))
    else:
        print(json.dumps(unpack(args.snapshot_dir, args.run_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
