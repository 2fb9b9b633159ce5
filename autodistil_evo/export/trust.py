"""Which model folders may run their own Python: only our StudentModel file, or what the user trusts.

A Hugging Face folder whose config names classes through `auto_map` is loaded by importing the
folder's Python files (`trust_remote_code=True`). `bench` and `finetune` allow that only when
every such file is byte-identical to this package's `modeling_student.py` or one of its earlier
versions (sha256), or when the user passes `--trust-remote-code`; anything else is refused before any
of the folder's code runs.
"""

import json
from pathlib import Path

from autodistil_evo.errors import UserError
from autodistil_evo.fileio import file_sha256 as _sha256
from autodistil_evo.supernet import modeling_student

# sha256 of the earlier versions of `modeling_student.py` (from this repository's history): students
# exported by an earlier version ship one of these, and are this package's own code as much as the current one.
EARLIER_STUDENT_FILES = frozenset({
    "51d423fb66e824b33ee4759b1f5cb7ab7c80fc6d181e57bf14affeff7363f427",
    "a41fe7dd7159d3411c45551ee0c6eebd6e47ade6bb606357800eabe88ca7b26c",
    "bd25826b071e0a45be1df4c27355762a95ba24b3f4036a5191b93e27fee1e27a",
    "dd8d405124a7737980d2f9970d523a12412ec02c1969bdc77f267f5fc469c838",
})


def _code_files(folder: Path) -> set:
    """The .py files the folder's config.json / tokenizer_config.json point at through `auto_map`."""
    files = set()
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            auto_map = json.loads(path.read_text()).get("auto_map") or {}
        except (json.JSONDecodeError, AttributeError):
            continue
        refs = [r for value in auto_map.values() for r in (value if isinstance(value, list) else [value]) if r]
        # "module.Class", or "repo--module.Class" (code fetched from another repository)
        files.update(ref if "--" in ref else ref.rsplit(".", 1)[0] + ".py" for ref in refs)
    return files


def allow_remote_code(model_dir, folder, trust_remote_code: bool = False) -> bool:
    """The `trust_remote_code` to load `folder` with; raises UserError where its code must not run."""
    files = _code_files(Path(folder))
    if not files:
        return False
    if trust_remote_code:
        return True
    ours = EARLIER_STUDENT_FILES | {_sha256(Path(modeling_student.__file__))}
    foreign = sorted(f for f in files
                     if "--" in f or not (Path(folder) / f).is_file() or _sha256(Path(folder) / f) not in ours)
    if foreign:
        raise UserError(
            f"{model_dir}: refused to run the folder's own code ({', '.join(foreign)}): it is not autodistil-evo's "
            "StudentModel file; pass --trust-remote-code if you trust this folder"
        )
    return True


def model_folder(model_dir, trust_remote_code: bool = False) -> tuple:
    """(local path, trust_remote_code to load it with) of a MODEL_DIR argument, checked as above."""
    from autodistil_evo.teacher import resolve_teacher

    path = resolve_teacher(model_dir)
    if not (Path(path) / "config.json").is_file():
        raise UserError(f"{model_dir}: not a Hugging Face model folder (no config.json)")
    return path, allow_remote_code(model_dir, path, trust_remote_code)
