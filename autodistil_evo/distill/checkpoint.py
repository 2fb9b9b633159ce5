"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

Layout: `<subspace dir>/checkpoints/step-00000100/` with `model.safetensors`,
`optimizer.safetensors` and `state.json` (step, scheduler, optimizer hyper-parameters, the
sha256 of both tensor files). A checkpoint is written into a temporary folder and renamed into
place, so a folder with that name is complete; a damaged one (bad hash, unreadable file) is
skipped with a warning, never deleted.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from autodistil_evo.faults import maybe_die
from autodistil_evo.fileio import atomic_dir, file_sha256

SCHEMA = 1
PREFIX = "step-"


def sha256(path: Path) -> str:
    return file_sha256(path)


WRAPPED = "optimizer_state_dict"  # DeepSpeed's mixed-precision optimizers wrap the torch one's state under it


def optimizer_to_flat(optimizer_state: dict):
    """Optimizer state_dict -> ({name: tensor}, JSON-able rest). A DeepSpeed bf16 / fp16 wrapper's
    own entries (fp32 master weights: tensors or lists of them; loss-scale numbers) are kept too."""
    if WRAPPED in optimizer_state:
        tensors, meta = optimizer_to_flat(optimizer_state[WRAPPED])
        wrapper = {}
        for key, value in optimizer_state.items():
            if key == WRAPPED:
                continue
            if torch.is_tensor(value):
                tensors[f"wrapper.{key}"] = value.detach().clone().contiguous()
                wrapper[key] = {"tensor": True}
            elif isinstance(value, (list, tuple)) and value and all(torch.is_tensor(t) for t in value):
                for i, t in enumerate(value):
                    tensors[f"wrapper.{key}.{i}"] = t.detach().clone().contiguous()
                wrapper[key] = {"tensors": len(value)}
            elif isinstance(value, (list, tuple)) and value and all(isinstance(g, (list, tuple)) for g in value):
                for i, group in enumerate(value):
                    for j, t in enumerate(group):
                        tensors[f"wrapper.{key}.{i}.{j}"] = t.detach().clone().contiguous()
                wrapper[key] = {"groups": [len(g) for g in value]}
            else:
                wrapper[key] = {"value": value.item() if hasattr(value, "item") else value}
        return tensors, {**meta, "wrapper": wrapper}
    tensors, scalars = {}, {}
    for index, entry in optimizer_state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().clone().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in optimizer_state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(tensors: dict, meta: dict) -> dict:
    if "wrapper" in meta:
        inner = optimizer_from_flat({k: v for k, v in tensors.items() if not k.startswith("wrapper.")},
                                    {k: v for k, v in meta.items() if k != "wrapper"})
        out = {WRAPPED: inner}
        for key, kind in meta["wrapper"].items():
            if "tensor" in kind:
                out[key] = tensors[f"wrapper.{key}"]
            elif "tensors" in kind:
                out[key] = [tensors[f"wrapper.{key}.{i}"] for i in range(kind["tensors"])]
            elif "groups" in kind:
                out[key] = [[tensors[f"wrapper.{key}.{i}.{j}"] for j in range(n)] for i, n in enumerate(kind["groups"])]
            else:
                out[key] = kind["value"]
        return out
    state = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict

    def model_state(self) -> dict:
        return load_file(self.path / "model.safetensors")

    def optimizer_state(self) -> dict:
        return optimizer_from_flat(load_file(self.path / "optimizer.safetensors"), self.state["optimizer"])


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"{PREFIX}{step:08d}"


def save_checkpoint(directory: Path, step: int, model_state: dict, optimizer_state: dict, extra: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step)
    with atomic_dir(final) as tmp:  # a previous run's checkpoint of the same step is replaced whole
        save_file({k: v.detach().contiguous() for k, v in model_state.items()}, tmp / "model.safetensors")
        maybe_die("checkpoint-write", step)
        opt_tensors, opt_meta = optimizer_to_flat(optimizer_state)
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        state = {
            "schema": SCHEMA,
            "step": step,
            "optimizer": opt_meta,
            "sha256": {name: sha256(tmp / name) for name in ("model.safetensors", "optimizer.safetensors")},
            **extra,
        }
        with open(tmp / "state.json", "w") as f:
            json.dump(state, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
    return final


def check_checkpoint(path: Path) -> Checkpoint:
    """Parse and verify one checkpoint folder; raise ValueError naming what is wrong."""
    state_file = path / "state.json"
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise ValueError("state.json missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"state.json unreadable ({e})") from None
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        raise ValueError(f"state.json schema {state.get('schema') if isinstance(state, dict) else None!r} != {SCHEMA}")
    for name, expected in state.get("sha256", {}).items():
        file = path / name
        if not file.is_file():
            raise ValueError(f"{name} missing")
        if sha256(file) != expected:
            raise ValueError(f"{name} does not match its recorded sha256 (truncated or modified)")
    try:
        load_file(path / "model.safetensors")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"model.safetensors unreadable ({e})") from None
    return Checkpoint(path=path, step=int(state["step"]), state=state)


def list_checkpoints(directory: Path) -> list:
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if path.is_dir() and path.name.startswith(PREFIX) and path.name[len(PREFIX):].isdigit():
            found.append((int(path.name[len(PREFIX):]), path))
    return [p for _, p in sorted(found)]


def latest_usable(directory: Path, warn) -> tuple:
    """(newest checkpoint that verifies, names of the ones skipped); damaged ones are left in place."""
    skipped = []
    for path in reversed(list_checkpoints(directory)):
        try:
            return check_checkpoint(path), skipped
        except ValueError as e:
            warn(f"skipping damaged checkpoint {path}: {e}")
            skipped.append(f"{path.name} ({e})")
    return None, skipped


def prune(directory: Path, keep_last: int):
    """Remove the oldest complete checkpoints beyond `keep_last`; damaged ones are not touched."""
    complete = []
    for path in list_checkpoints(directory):
        try:
            json.loads((path / "state.json").read_text())
            complete.append(path)
        except (OSError, ValueError):
            continue
    for path in complete[: max(len(complete) - keep_last, 0)]:
        shutil.rmtree(path, ignore_errors=True)
