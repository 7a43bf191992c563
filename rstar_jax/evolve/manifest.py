"""Stage manifests: the record that a stage finished, written last and atomically.

A stage directory without `manifest.json` is unfinished (never started, or
killed part way): the runner reruns it and the stage resumes from its own
partial output. With a manifest it is done and is skipped on rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from typing import Any, Dict, Optional

MANIFEST = "manifest.json"


def git_revision(path: Optional[str] = None) -> Optional[str]:
    """The checkout's commit (with "+dirty" when it has changes), or None."""
    cwd = path or os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def config_hash(config: Dict[str, Any]) -> str:
    """A short stable hash of a config dict (to notice a changed config on rerun)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def atomic_write_json(path: str, data: Any) -> None:
    """Writes JSON to a temp file, fsyncs, renames: readers never see half a file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(stage_dir: str, data: Dict[str, Any]) -> str:
    """Marks `stage_dir` finished with `data`; returns the manifest path."""
    path = os.path.join(stage_dir, MANIFEST)
    atomic_write_json(path, data)
    return path


def read_manifest(stage_dir: str) -> Optional[Dict[str, Any]]:
    """The manifest of a finished stage, or None if the stage is unfinished."""
    path = os.path.join(stage_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
