"""Export a student as an ordinary Hugging Face model folder, verified before it is put in place.

Students whose Q/K/V width equals hidden are saved as plain `BertModel`s. The others follow the HF
custom-code convention: `auto_map` in config.json and the self-contained `modeling_student.py`
copied beside the weights, so `AutoModel.from_pretrained(DIR, trust_remote_code=True)` and
`AutoModelForSequenceClassification` work where autodistil-evo is not installed.
"""

import json
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModel

from autodistil_evo import __version__
from autodistil_evo.distill.artifact import load_superlm
from autodistil_evo.distill.checkpoint import sha256
from autodistil_evo.errors import UserError
from autodistil_evo.fileio import atomic_dir, portable_path, read_json, read_jsonl, reported_write, tensor_bytes
from autodistil_evo.spaces import Arch, count_flops, count_params
from autodistil_evo.supernet import StudentModel

TOLERANCE = 1e-5
STUDENT_AUTO_MAP = {
    "AutoConfig": "modeling_student.StudentConfig",
    "AutoModel": "modeling_student.StudentModel",
    "AutoModelForSequenceClassification": "modeling_student.StudentForSequenceClassification",
}


PROVENANCE = "autodistil_provenance.json"


def _from_student_folder(folder: Path):
    """(trained SuperLM, arch, proxy loss) of a student folder this package exported."""
    record = folder / PROVENANCE
    if not record.is_file():
        raise UserError(f"{folder}: not a student folder exported by autodistil-evo (no {PROVENANCE}); give a search "
                        "directory with --id or a run directory with --arch")
    provenance = read_json(record, "student provenance")
    if not isinstance(provenance, dict) or not isinstance(provenance.get("superlm"), str):
        raise UserError(f"{record}: no 'superlm' entry naming the SuperLM the student was exported from")
    trained = load_superlm(folder / provenance["superlm"])  # relative to the folder (older ones: absolute)
    if trained.meta.get("sha256") != provenance.get("superlm_sha256"):
        raise UserError(f"{trained.path}: not the SuperLM {folder} was exported from (its sha256 differs)")
    arch = Arch.from_dict(provenance.get("arch"), f"{record} arch")
    trained.subspace.check(arch, f"{record} arch")
    return trained, arch, provenance.get("proxy_loss")


def resolve_source(source, student_id=None, arch_json=None, folder_ok=False):
    """(trained SuperLM, arch, proxy loss or None) from a search dir + id, a run dir + arch JSON, or (with
    `folder_ok`) a student folder this package exported."""
    source = Path(source)
    if folder_ok and student_id is None and arch_json is None:
        return _from_student_folder(source)
    if (student_id is None) == (arch_json is None):
        raise UserError("give exactly one of --id (with a search directory) or --arch (with a run directory)")
    if student_id is not None:
        pareto = source / "pareto.json"
        if not pareto.is_file():
            raise UserError(f"{source}: no pareto.json; --id needs a search directory written by `autodistil-evo evolve`")
        data = read_json(pareto, "Pareto set")
        rows = {r["id"]: r for r in data["front"]}
        for r in read_jsonl(source / "history.jsonl"):  # any evaluated arch can be exported, not only the front
            rows.setdefault(f"{r['subspace']}-{r['key']}", {**r["arch"], "subspace": r["subspace"], "loss": r["loss"]})
        if student_id not in rows:
            raise UserError(f"{pareto}: no student with id '{student_id}' (e.g. {', '.join(list(rows)[:3])})")
        row = rows[student_id]
        trained = load_superlm(Path(data["run_dir"]) / row["subspace"])
        arch = Arch.from_dict(row, f"{pareto} id {student_id}")
        trained.subspace.check(arch, f"{pareto} id {student_id}")
        return trained, arch, row.get("loss")
    try:
        spec = json.loads(arch_json)
    except json.JSONDecodeError as e:
        raise UserError(f"--arch: not valid JSON ({e})") from None
    if not isinstance(spec, dict) or "subspace" not in spec:
        raise UserError('--arch: expected an object like {"subspace": "tiny", "layers": 4, "heads": 7, "hidden": 160, '
                        '"mlp_ratio": 3.0} (heads / mlp_ratio may be lists, one value per layer)')
    arch = Arch.from_dict(spec, "--arch")
    trained = load_superlm(source / str(spec["subspace"]))
    trained.subspace.check(arch, "--arch")
    return trained, arch, None


def _verification_batch(tokenizer, texts):
    return tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")


@torch.inference_mode()
def max_output_difference(superlm, arch, model, batch) -> float:
    superlm.eval().set_active(arch)
    expected, _, _ = superlm(batch["input_ids"], batch["attention_mask"])
    got = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].bool()
    return (expected - got)[mask].abs().max().item()


def _flops(value) -> str:
    return "not recorded" if value is None else f"{value:.4g}"


def model_card(provenance: dict) -> str:
    p = provenance
    compute = p["train_flops_parts"]
    trained = p.get("trained_alone")
    how = ("the weights are the subnet's, not retrained" if not trained else
           f"then trained alone for {trained['steps']} steps from {'its SuperLM subnet' if trained['init'] == 'superlm' else 'the teacher (first-k slices)'}")
    lines = [
        "---",
        "library_name: transformers",
        "tags: [autodistil-evo, distillation, bert]",
        "---",
        f"# {p['id']}",
        "",
        f"A student distilled from **{p['teacher']['name']}** by autodistil-evo {p['package_version']} "
        "(AutoDistil: task-agnostic MiniLMv2 relation distillation into a weight-sharing SuperLM, "
        f"then an evolutionary search; {how}).",
        "",
        "| | |",
        "|---|---|",
        f"| teacher | {p['teacher']['name']} (weights sha256 `{p['teacher']['sha256']}`) |",
        f"| search space | {p['space']} (sha256 `{p.get('space_sha256', 'not recorded')}`) / sub-space `{p['subspace']}` |",
        f"| arch | {p['arch']['layers']} layers, {p['arch']['heads']} heads x {p['head_dim']}, hidden "
        f"{p['arch']['hidden']}, FFN {p['ffn']}{' (lists: one value per layer)' if isinstance(p['ffn'], list) or isinstance(p['arch']['heads'], list) else ''} |",
        f"| teacher layers kept | {', '.join(map(str, p['teacher_layers'])) if 'teacher_layers' in p else 'not recorded'} |",
        f"| params | {p['params']:,} ({p['params_without_embeddings']:,} without embeddings) |",
        f"| FLOPs | {p['flops']:.4g} per sequence of {p['seq_len']} tokens |",
        f"| proxy loss | {p['proxy_loss'] if p['proxy_loss'] is not None else 'not evaluated'} |",
        f"| SuperLM | `{p.get('superlm_name', p['superlm'])}` at step {p['superlm_step']} (sha256 `{p['superlm_sha256']}`) |",
        f"| training compute | {_flops(p['train_flops'])} FLOPs: its SuperLM's training {_flops(compute['superlm'])} (shared "
        f"by every student taken from it) + its own further training {_flops(compute['student'])} |",
        f"| model class | {p['model_class']} |",
        f"| check | max abs difference to the SuperLM subnet on held-out text: {p['max_abs_diff']:.2e} |",
        "",
        "```python",
        "from transformers import AutoModel, AutoTokenizer",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        f"model = AutoModel.from_pretrained(PATH{', trust_remote_code=True' if p['remote_code'] else ''})",
        "```",
        "",
    ]
    return "\n".join(lines)


def _portable_spec(spec: str, base) -> str:
    """A teacher spec for a record: a hub or embedded name as it is, a local folder relative to `base`."""
    return portable_path(spec, base) if Path(spec).exists() else spec


def _teacher_name(name: str) -> str:
    """A hub or embedded name as it is; a local folder by its folder name."""
    return Path(name).name if Path(name).is_absolute() or Path(name).exists() else name


def _teacher_weights_hash(teacher_source: str) -> str:
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = Path(teacher_source) / name
        if path.is_file():
            return sha256(path)
    return "unknown"


ST_MODULES = "sentence_transformers.models."
ST_ADAPTED = {"Transformer", "Pooling", "Normalize"}  # modules a student of another width can carry over
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def sentence_transformer_files(teacher_dir: Path, out: Path, hidden: int) -> str | None:
    """Where the teacher is a sentence-transformers folder (`modules.json`), write the student as one too:
    the teacher's module list, its pooling (dimension set to the student's width) and normalisation, and
    its sentence-transformers configs. Returns why it could not, or None."""
    teacher_dir = Path(teacher_dir)
    if not (teacher_dir / "modules.json").is_file():
        return "the teacher is not a sentence-transformers folder"
    modules = json.loads((teacher_dir / "modules.json").read_text())
    kinds = {m["type"].removeprefix(ST_MODULES) for m in modules}
    if not kinds <= ST_ADAPTED or not any(m["path"] == "" and m["type"] == ST_MODULES + "Transformer" for m in modules):
        return f"its pipeline has modules a narrower student cannot reuse ({', '.join(sorted(kinds - ST_ADAPTED)) or 'layout'})"
    for module in modules:
        source = teacher_dir / module["path"] / "config.json"
        if module["type"] == ST_MODULES + "Pooling" and source.is_file():
            config = {**json.loads(source.read_text()), "word_embedding_dimension": hidden}
            (out / module["path"]).mkdir(parents=True, exist_ok=True)
            (out / module["path"] / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ST_FILES:
        if (teacher_dir / name).is_file():
            shutil.copy(teacher_dir / name, out / name)
    return None


def check_model_dir(out_dir, force: bool) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: output exists and is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UserError(f"{out_dir}: not empty; pass --force to replace it")
    return out_dir


def training_compute(meta: dict) -> dict:
    """FLOPs spent to make a SuperLM's students: its SuperLM's training (for a `train-student` run, the
    SuperLM it started from) and the student's own further training; None where not recorded."""
    student = meta.get("student")
    if student is None:
        return {"superlm": meta.get("train_flops"), "student": 0}
    return {"superlm": student.get("superlm_train_flops"), "student": meta.get("train_flops")}


def total_training_flops(meta: dict) -> int | None:
    """All the FLOPs that made a SuperLM's students (`training_compute` summed); None where a part is not recorded."""
    parts = training_compute(meta)
    return None if None in parts.values() else sum(parts.values())


def export_student(source, out_dir, student_id=None, arch_json=None, force=False, log=print) -> dict:
    """`autodistil-evo export`: a search pick or an arch of a run as an HF folder."""
    out_dir = check_model_dir(out_dir, force)
    trained, arch, proxy_loss = resolve_source(source, student_id, arch_json)
    return export_trained(trained, arch, out_dir, student_id or f"{trained.subspace.name}-{arch.key()}", proxy_loss, log)


def export_trained(trained, arch, out_dir, student_name: str, proxy_loss=None, log=print) -> dict:
    """Write `trained`'s subnet `arch` to `out_dir`, checked against the SuperLM before it is put in place."""
    from autodistil_evo.data import open_run_corpus
    from autodistil_evo.teacher import load_teacher

    out_dir = Path(out_dir)
    meta = trained.meta
    teacher = load_teacher(meta["teacher"]["spec"])
    student = trained.superlm.extract(arch)
    remote_code = isinstance(student, StudentModel)
    dims = trained.space.dims(trained.teacher_shape)

    packed = open_run_corpus(meta.get("corpus_store"), meta["corpus"], teacher.tokenizer, meta["seq_len"], meta["heldout_fraction"])
    heldout = packed.heldout[:4]
    if len(heldout) == 0:
        raise UserError(f"{packed.path}: the run's corpus has no held-out block to verify the export on")
    texts = teacher.tokenizer.batch_decode(heldout, skip_special_tokens=True)
    texts[-1] = texts[-1][: len(texts[-1]) // 3]  # a shorter text, so padding is checked too
    batch = _verification_batch(teacher.tokenizer, texts)

    with reported_write(out_dir, "the exported student", tensor_bytes(student.state_dict()),
                        "nothing was written there; free space or fix permissions and export again"), \
            atomic_dir(out_dir) as tmp:
        if remote_code:
            student.config.auto_map = dict(STUDENT_AUTO_MAP)
            student.config._auto_class = "AutoConfig"  # makes save_pretrained copy modeling_student.py
        student.save_pretrained(tmp)
        teacher.tokenizer.save_pretrained(tmp)
        not_st = sentence_transformer_files(teacher.source, tmp, arch.hidden)
        if not_st is None:
            log("written as a sentence-transformers model too (the teacher's pooling and normalisation)")
        elif (Path(teacher.source) / "modules.json").is_file():
            log(f"not written as a sentence-transformers model: {not_st}")
        reloaded = AutoModel.from_pretrained(tmp, trust_remote_code=remote_code).eval()
        difference = max_output_difference(trained.superlm, arch, reloaded, batch)
        log(f"max abs difference, exported model vs. SuperLM subnet on held-out text: {difference:.2e}")
        if not difference <= TOLERANCE:
            raise UserError(f"export check failed: outputs differ by {difference:.2e} > {TOLERANCE:g}; nothing written to {out_dir}")
        provenance = {
            "id": student_name,
            "package_version": __version__,
            "teacher": {"name": _teacher_name(trained.teacher_shape.name), "spec": _portable_spec(meta["teacher"]["spec"], out_dir),
                        "sha256": _teacher_weights_hash(teacher.source)},
            "space": trained.space.name,
            "space_sha256": trained.space.sha256(),
            "subspace": trained.subspace.name,
            "arch": arch.to_dict(),
            "teacher_layers": trained.teacher_layers(arch),
            "ffn": arch.ffn,
            "head_dim": dims.head_dim,
            "params": count_params(arch, dims),
            "params_without_embeddings": count_params(arch, dims, include_embeddings=False),
            "flops": count_flops(arch, dims, trained.space.seq_len),
            "seq_len": trained.space.seq_len,
            "proxy_loss": proxy_loss,
            "superlm": portable_path(trained.path, out_dir),  # relative to the student folder
            "superlm_name": f"{Path(trained.path).resolve().parent.name}/{trained.subspace.name}",
            "superlm_step": meta["step"],
            "superlm_sha256": meta["sha256"],
            "model_class": type(student).__name__,
            "remote_code": remote_code,
            "max_abs_diff": difference,
            "sentence_transformers": not_st is None,
            "train_flops_parts": training_compute(meta),
        }
        provenance["train_flops"] = total_training_flops(meta)
        if "student" in meta:  # its paths are relative to the train-student run; here, to the student folder
            run = Path(trained.path).parent
            student = meta["student"]
            provenance["trained_alone"] = {
                **student, "steps": meta["step"], "teacher": _portable_spec(student["teacher"], out_dir),
                **{key: portable_path(run / student[key], out_dir) for key in ("source", "superlm") if key in student},
            }
        (tmp / "README.md").write_text(model_card(provenance))
        (tmp / "autodistil_provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        for file in tmp.rglob("*"):  # some writers create 0600 files; a model folder is for sharing
            if file.is_file():
                file.chmod(0o666 & ~umask)
    return provenance
