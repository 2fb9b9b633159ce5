"""Atomic writes, JSON helpers and the run-directory lock: nothing half-written, nothing lost."""

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from autodistil_evo.errors import UserError


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def write_failure(error: Exception, path, operation: str, needed_bytes: int | None = None, after: str = "") -> UserError:
    """One line for a write that the environment refused (a full disk, a read-only folder, a quota):
    the path, the operation, for space what it needed and what is free, and `after` (what is intact, what to do)."""
    text = str(error)
    reason = getattr(error, "strerror", None) or text.rsplit(": ", 1)[-1].split(" (os error")[0] or type(error).__name__
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "quota" in text.lower()
    line = f"{path}: cannot write {operation} ({reason})"
    if full:
        free = next((shutil.disk_usage(p).free for p in (Path(path), *Path(path).parents) if p.exists()), None)
        needs = f"it needs about {_megabytes(needed_bytes)}" if needed_bytes else "it needs more space"
        line += f"; {needs}, {_megabytes(free) if free is not None else 'an unknown amount'} free there"
    return UserError(line + (f"; {after}" if after else ""))


@contextmanager
def reported_write(path, operation: str, needed_bytes: int | None = None, after: str = ""):
    """Writes inside the block that fail with an OSError (or safetensors' wrapper of one) become `write_failure`."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as e:
        raise write_failure(e, path, operation, needed_bytes, after) from None


def tensor_bytes(tensors) -> int:
    """Bytes of a dict (or nested lists / dicts) of tensors as they would be written."""
    if isinstance(tensors, dict):
        return sum(tensor_bytes(v) for v in tensors.values())
    if isinstance(tensors, (list, tuple)):
        return sum(tensor_bytes(v) for v in tensors)
    return tensors.numel() * tensors.element_size() if hasattr(tensors, "element_size") else 0


def portable_path(path, base) -> str:
    """`path` relative to the folder `base`, for records that travel with their folders (cards, provenance)."""
    return os.path.relpath(Path(path).resolve(), Path(base).resolve())


def write_text(path, text: str):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def replace_dir(tmp, target):
    """Put the finished folder `tmp` in place of `target` (which may exist): renames, then the old one goes."""
    tmp, target = Path(tmp), Path(target)
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextmanager
def atomic_dir(target):
    """Yield a new empty folder beside `target`; when the block ends without an error it takes `target`'s
    place (`replace_dir`), else it is removed: a reader sees the old folder or the whole new one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path, rows):
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_json(path, what="file"):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: {what} is not valid JSON ({e})") from None


def shipped_config(path, kind: str) -> Path:
    """`path` as given, or where it names none, the shipped `kind` ("recipes" or "spaces") of that name:
    `quickstart` or `quickstart.yaml` is recipes/quickstart.yaml. The shipped files are the checkout's
    top-level folders, installed inside the package (`autodistil_evo/_data/`) by a wheel."""
    path = Path(path)
    if path.exists() or path.parent != Path("."):
        return path
    package = Path(__file__).resolve().parent
    for folder in (package / "_data" / kind, package.parent / kind):
        for candidate in (folder / path.name, folder / f"{path.name}.yaml"):
            if candidate.is_file():
                return candidate
    return path


def read_yaml(path, what="file"):
    """Parse a YAML file with safe_load; errors name the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file") from None


def check_mapping(data, where: str, allowed, required=(), kind="a mapping"):
    """A config section must be a mapping with only `allowed` keys and every `required` one."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: must be {kind}, got {type(data).__name__}")
    unknown = set(data) - set(allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in data:
            raise UserError(f"{where}: missing key '{key}'")


def read_jsonl(path):
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_output_dir(path, what="output directory") -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: {what} is a file; pass a directory path")
    return path


def prepare_output_dir(path, what="output directory") -> Path:
    path = check_output_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot create {what} ({e.strerror})") from None
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def directory_lock(directory, warn=print):
    """One writer per run/search directory: a `.lock` file holding the owner's pid.

    A lock left by a dead process is taken over with a warning; a live owner makes us refuse.
    """
    lock = Path(directory) / ".lock"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _pid_alive(owner):
                raise UserError(
                    f"{directory}: in use by process {owner} (lock file {lock}); wait for it or stop it"
                ) from None
            warn(f"taking over stale lock {lock} of dead process {owner}")
            lock.unlink(missing_ok=True)
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)
