"""A trained SuperLM on disk: `superlm.safetensors` + `superlm.json` in RUN_DIR/<subspace>/."""

from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from autodistil_evo.distill.checkpoint import sha256
from autodistil_evo.errors import UserError
from autodistil_evo.fileio import atomic_path, read_json, write_json
from autodistil_evo.spaces import SearchSpace, SubSpace, TeacherShape
from autodistil_evo.spaces.space import parse_space
from autodistil_evo.supernet import SuperLM, stride_layers
from autodistil_evo.supernet.elastic import arch_layers

SUPERLM_WEIGHTS = "superlm.safetensors"
SUPERLM_META = "superlm.json"


@dataclass
class TrainedSuperLM:
    superlm: SuperLM
    meta: dict
    space: SearchSpace
    subspace: SubSpace
    teacher_shape: TeacherShape
    path: Path

    def teacher_layers(self, arch) -> list:
        """The teacher's layers `arch`'s layers were cut from (`teacher_layers` of superlm.json: the teacher
        layer of each SuperLM layer; evenly strided where it is not recorded)."""
        own = self.meta.get("teacher_layers") or stride_layers(self.subspace.depth, self.teacher_shape.layers)
        return [own[i] for i in arch_layers(arch, self.subspace.depth)]


def save_superlm(directory: Path, superlm: SuperLM, meta: dict):
    weights = directory / SUPERLM_WEIGHTS
    with atomic_path(weights) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in superlm.student_state().items()}, tmp)
    write_json(directory / SUPERLM_META, {**meta, "sha256": sha256(weights)})


def load_superlm(directory) -> TrainedSuperLM:
    directory = Path(directory)
    meta_file, weights = directory / SUPERLM_META, directory / SUPERLM_WEIGHTS
    if not meta_file.is_file():
        raise UserError(f"{directory}: no trained SuperLM here ({SUPERLM_META} missing); run `autodistil-evo train` first")
    meta = read_json(meta_file, "SuperLM description")
    if not isinstance(meta, dict) or meta.get("schema") != 1:
        raise UserError(f"{meta_file}: unsupported schema {meta.get('schema') if isinstance(meta, dict) else None!r} (expected 1)")
    if not weights.is_file():
        raise UserError(f"{weights}: SuperLM weights missing")
    if sha256(weights) != meta.get("sha256"):
        raise UserError(f"{weights}: does not match the sha256 recorded in {meta_file} (truncated or modified)")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights}: unreadable safetensors file ({e})") from None
    space = parse_space(meta["space"], source=meta.get("space_file", str(meta_file)))
    subspace = space.subspace(meta["subspace"])
    teacher_shape = TeacherShape(**meta["teacher"]["shape"])
    superlm = SuperLM(
        subspace,
        space.dims(teacher_shape),
        layer_norm_eps=meta.get("layer_norm_eps", 1e-12),
        dropout=meta.get("dropout", 0.1),
        pad_token_id=meta.get("pad_token_id", 0),
    )
    try:
        superlm.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{weights}: weights do not fit sub-space '{subspace.name}' ({str(e).splitlines()[0]})") from None
    return TrainedSuperLM(superlm.eval(), meta, space, subspace, teacher_shape, directory)


def trained_subspaces(run_dir) -> list:
    """Sub-space folders of a run that hold a trained SuperLM, in the space's order."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory not found")
    found = [p for p in sorted(run_dir.iterdir()) if (p / SUPERLM_META).is_file()]
    if not found:
        raise UserError(f"{run_dir}: no trained SuperLM in any sub-folder; run `autodistil-evo train --out {run_dir}` first")
    return found
