"""What produced an output directory, so that a rerun never mixes two runs.

`search` and `evaluate` resume by appending to their results; a rerun into
the same directory with another question, seed, budget or model would
otherwise mix the two runs silently. Each such directory therefore records:

    DIR/fingerprint.json   the resolved config keys that change results, the
                           model identity (path + content digest), and the
                           digest of the problems file
    DIR/config.yaml        the whole resolved config, for people

`check_output_dir` compares a rerun's fingerprint with the stored one and
raises `FingerprintMismatch` naming every difference; with `force` the old
contents are set aside in `DIR/superseded/<UTC time>/` and the run starts
again. Keys that only change speed (slots, workers, chunk sizes, paths whose
content is fingerprinted instead) are left out, so a resume may use more
slots or another copy of the same checkpoint.

Training checkpoints (`training/loop.py`) and evolve stages
(`evolve/manifest.py`) carry their own fingerprints.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from typing import Any, Dict, Iterable, List, Mapping, Optional

FINGERPRINT_FILE = "fingerprint.json"
CONFIG_FILE = "config.yaml"
SUPERSEDED_DIR = "superseded"

# Config sections whose values can change a search's or an evaluation's results.
RESULT_SECTIONS = ("seed", "model", "ppm", "engine", "mcts", "executor", "data.assistant_sep",
                   "eval")
# ...and, for the commands that evaluate, the inference protocol they search
# under (rollouts, candidates, temperature, ...): without it a resumed
# evaluation would append one protocol's results to another's. A training-data
# search never reads it, so changing it does not refuse a search's resume.
EVAL_SECTIONS = RESULT_SECTIONS + ("inference_eval",)
EVAL_COMMANDS = frozenset({"evaluate"})
# ...less what only changes speed or names a file fingerprinted by content.
IGNORED_KEYS = frozenset({
    "model.checkpoint", "model.hf_dir", "model.tokenizer_dir", "model.remat", "ppm.checkpoint",
    "engine.num_slots", "engine.decode_steps_per_call", "engine.prefix_cache",
    "engine.prefix_cache_tokens", "engine.prefill_buckets",
    "mcts.trees_in_flight", "mcts.overlap_execution",
    "executor.num_workers", "executor.max_processes",
    "executor.preload_modules",
    "eval.benchmarks", "eval.data_dir", "eval.limit", "eval.chunk_size", "eval.benchmark_dir",
    "eval.levels_path", "eval.bootstrap_samples", "eval.processbench_dir",
    "eval.processbench_tune_subset", "eval.processbench_threshold",
})
_WHOLE_FILE_BYTES = 1 << 20  # files up to this size are hashed whole; larger ones by size + ends


class FingerprintMismatch(ValueError):
    """A rerun into a directory made by a different run."""


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def result_keys(cfg, sections: Iterable[str] = RESULT_SECTIONS) -> Dict[str, Any]:
    """The flat `{dotted key: value}` of `cfg` that can change results."""
    from rstar_jax.config.loader import to_dict

    flat = _flatten(to_dict(cfg))
    keep = tuple(sections)
    return {k: v for k, v in sorted(flat.items())
            if k not in IGNORED_KEYS and any(k == s or k.startswith(s + ".") for s in keep)}


def file_digest(path: str) -> str:
    """sha256 of a file: all of it up to 1 MiB, else its size and first and last MiB.

    Checkpoint tensors are gigabytes; their size and ends change with their
    content in practice, and reading them whole would cost more than a resume.
    """
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= _WHOLE_FILE_BYTES:
            h.update(f.read())
        else:
            h.update(str(size).encode())
            h.update(f.read(_WHOLE_FILE_BYTES))
            f.seek(size - _WHOLE_FILE_BYTES)
            h.update(f.read())
    return h.hexdigest()


def path_digest(path: str) -> str:
    """`file_digest` of a file, or of every file under a directory (with names)."""
    if os.path.isfile(path):
        return file_digest(path)
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, path).encode() + b"\0")
            h.update(file_digest(full).encode())
    return h.hexdigest()


def model_identity(checkpoint: Optional[str], hf_dir: Optional[str] = None) -> Optional[Dict]:
    """{"path", "digest"} of the weights a run loads; None for a fresh init."""
    path = checkpoint or hf_dir
    if not path:
        return None
    if not os.path.exists(path):
        raise FileNotFoundError(f"model not found: {path}")
    return {"path": os.path.abspath(path), "digest": path_digest(path)}


def make_fingerprint(cfg, *, command: str, problems: Mapping[str, str], with_ppm: bool,
                     extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The fingerprint of a `command` run of `cfg` on `problems` ({name: digest});
    `extra` adds settings that come from flags, not the config (e.g. the method)."""
    m = cfg.model
    sections = EVAL_SECTIONS if command in EVAL_COMMANDS else RESULT_SECTIONS
    return {
        "command": command,
        "config": {**result_keys(cfg, sections), **(extra or {})},
        "model": model_identity(m.checkpoint, m.hf_dir),
        "ppm": model_identity(cfg.ppm.checkpoint) if with_ppm else None,
        "problems": dict(problems),
    }


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    """Human-readable differences between two fingerprints, one per item."""
    out = []
    if old.get("command") != new.get("command"):
        out.append(f"command {old.get('command')} -> {new.get('command')}")
    oc, nc = old.get("config", {}), new.get("config", {})
    for key in sorted(set(oc) | set(nc)):
        if oc.get(key, "<unset>") != nc.get(key, "<unset>"):
            out.append(f"{key} {_short(oc.get(key, '<unset>'))} -> {_short(nc.get(key, '<unset>'))}")
    for part in ("model", "ppm"):
        o, n = old.get(part), new.get(part)
        if o == n:
            continue
        if o and n and o["path"] == n["path"]:
            out.append(f"{part} {n['path']}: its contents changed")
        else:
            out.append(f"{part} {o['path'] if o else 'fresh init'} -> "
                       f"{n['path'] if n else 'fresh init'}")
    op, np_ = old.get("problems", {}), new.get("problems", {})
    for name in sorted(set(op) & set(np_)):
        if op[name] != np_[name]:
            out.append(f"problems {name}: the file's contents changed")
    return out


def _set_aside(out_dir: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = os.path.join(out_dir, SUPERSEDED_DIR, stamp)
    os.makedirs(dest)
    for name in os.listdir(out_dir):
        if name != SUPERSEDED_DIR:
            shutil.move(os.path.join(out_dir, name), os.path.join(dest, name))
    return dest


def check_output_dir(out_dir: str, fingerprint: Dict[str, Any], cfg=None, *,
                     force: bool = False, merge_problems: bool = True) -> Optional[str]:
    """Refuses a rerun into `out_dir` by a different run; records this run's.

    A directory without a fingerprint but with files in it (made before
    fingerprints existed, or by hand) is refused too, since what made it is
    unknown. Problems files absent from the stored fingerprint are added
    (`merge_problems`: evaluate runs benchmarks one at a time).

    Args:
      fingerprint: `make_fingerprint`'s record of this run.
      cfg: written to `config.yaml` beside the results when given.
      force: set the old contents aside in `superseded/<UTC time>/` instead.

    Returns:
      Where the old contents went when `force` set them aside, else None.

    Raises:
      FingerprintMismatch: naming every difference and the two ways out.
    """
    path = os.path.join(out_dir, FINGERPRINT_FILE)
    moved = None
    record = dict(fingerprint)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        diff = differences(old, fingerprint)
        if diff and not force:
            raise FingerprintMismatch(
                f"{out_dir} holds results of a different run ({'; '.join(diff)}); "
                "use a new output directory, or --force to set the old results aside "
                f"in {os.path.join(out_dir, SUPERSEDED_DIR)}/ and start again")
        if diff:
            moved = _set_aside(out_dir)
        elif merge_problems:
            record["problems"] = {**old.get("problems", {}), **fingerprint["problems"]}
    elif os.path.isdir(out_dir) and [n for n in os.listdir(out_dir) if n != SUPERSEDED_DIR]:
        if not force:
            raise FingerprintMismatch(
                f"{out_dir} is not empty and records no fingerprint of the run that made it; "
                "use a new output directory, or --force to set its contents aside in "
                f"{os.path.join(out_dir, SUPERSEDED_DIR)}/ and start again")
        moved = _set_aside(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    _write_json(path, record)
    if cfg is not None:
        from rstar_jax.config.loader import to_yaml

        with open(os.path.join(out_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
            f.write(to_yaml(cfg))
    return moved


def _write_json(path: str, value: Any) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
