"""The run cache: one JSON file per (task set-up, method, LR, seed, code), so an interrupted bench resumes.

Lives in ``benchmarks/.cache/`` (git-ignored): a fresh clone computes everything. The key covers all
that determines a run's result: the task's full specification (budget included), the method and its
options, the LR, the seed, the source of the harness code that trains (not the report code), the
versions of the optimizer packages, and, for autolrs runs (and replays of their schedules) only, the autolrs
source itself. Changing autolrs therefore re-runs autolrs and nothing else; changing a task or the training loop re-runs all. Which
runs a bench makes (the ablation list, ``benchmarks.ablations``; the modes, ``benchmarks.plans``) is not
training code: adding an ablation row runs that row only.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from .methods import AUTOLRS_FAMILIES, Method
from .tasks.base import TaskSpec

__all__ = ["RunCache", "run_key", "code_fingerprint", "package_versions", "CACHE_DIR"]

HERE = Path(__file__).resolve().parent
CACHE_DIR = HERE / ".cache"
# The harness code a run's result depends on (relative to benchmarks/): a task's code lives under tasks/.
TRAINING_CODE = ("train.py", "methods", "tasks")
PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "prodigyopt", "schedulefree", "mnist1d")


def _hash_tree(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _sources(root: Path) -> list[Path]:
    return [root] if root.is_file() else sorted(root.rglob("*.py"))


@lru_cache(maxsize=None)
def code_fingerprint(autolrs: bool) -> str:
    """A hash of the training code (and of autolrs's source when ``autolrs``) and package versions."""
    files = [p for name in TRAINING_CODE for p in _sources(HERE / name)]
    if autolrs:
        import autolrs

        files += _sources(Path(autolrs.__file__).resolve().parent)
    versions = [f"{package}=={version}" for package, version in package_versions().items()]
    return hashlib.sha256((_hash_tree(files) + ";".join(versions)).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    """The installed version of each package a run's result depends on (``"none"`` if absent)."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "none"
    return versions


def run_key(task: TaskSpec, m: Method, lr: float | None, seed: int) -> str:
    identity = {"task": task.to_dict(), "method": m.to_dict(), "lr": lr, "seed": seed,
                "code": code_fingerprint(m.family in AUTOLRS_FAMILIES)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


class RunCache:
    """Records by key, as files ``<root>/<task>/<key>.json``; ``root=None`` caches nothing."""

    def __init__(self, root: Path | None = CACHE_DIR) -> None:
        self.root = None if root is None else Path(root)

    def _path(self, task: str, key: str) -> Path:
        return self.root / task / f"{key}.json"

    def get(self, task: str, key: str) -> dict | None:
        if self.root is None:
            return None
        path = self._path(task, key)
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, task: str, key: str, record: dict) -> None:
        if self.root is None:
            return
        path = self._path(task, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(record, allow_nan=True))
        os.replace(tmp, path)  # atomic: an interrupted write leaves no half record
