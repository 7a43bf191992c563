"""Root only: runs a command as an unprivileged uid that can read our Python.

`python as_nobody.py UID -- CMD...`. The interpreter may live under a
private home (pyenv under /root, mode 0700), which the uid cannot enter. So,
in a mount namespace of this process only (the host's view is untouched and
nothing is chmodded), every directory on the way to the trees Python and
the sandbox need that the uid cannot traverse is covered by a tmpfs with
those trees bound back at their own paths. Then `setpriv` drops to the uid
(no groups, no capabilities) and runs the command, which sees the same
paths as we do.
"""

import ctypes
import os
import stat
import sys

_CLONE_NEWNS = 0x00020000
_MS_BIND, _MS_REC, _MS_PRIVATE = 1 << 12, 1 << 14, 1 << 18
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _closed_ancestor(path: str):
    """The outermost directory above `path` that others cannot traverse, or None."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        d = "/" + "/".join(parts[:i])
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return d
    return None


def open_view(paths) -> None:
    """Makes `paths` reachable to any uid, in a new private mount namespace."""
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    groups = {}
    for p in paths:
        top = _closed_ancestor(os.path.realpath(p))
        if top is not None:
            groups.setdefault(top, set()).add(os.path.realpath(p))
    for top, inside in groups.items():
        fds = {p: os.open(p, os.O_PATH) for p in sorted(inside)}
        _check(_libc.mount(b"tmpfs", top.encode(), b"tmpfs", 0, b"mode=0755"), f"tmpfs on {top}")
        for p, fd in fds.items():
            os.makedirs(p, mode=0o755, exist_ok=True)
            _check(_libc.mount(f"/proc/self/fd/{fd}".encode(), p.encode(), None, _MS_BIND | _MS_REC, None),
                   f"bind {p}")
            os.close(fd)


def main() -> None:
    uid = int(sys.argv[1])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    from rstar_jax.execution.isolation import bwrap_binary, needed_paths

    open_view(needed_paths() + [os.path.dirname(bwrap_binary() or "/")])
    os.execvp("setpriv", ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                          "--inh-caps=-all", "--bounding-set=-all", "--", *cmd])


if __name__ == "__main__":
    main()
