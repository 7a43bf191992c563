"""The seccomp filter every program child runs under (issue 18).

Built once on the host with libseccomp (through the `pyseccomp` ctypes
binding: the kernel's own filter language, not hand-written BPF) and
exported as BPF bytes; a program child installs those bytes with two
`prctl` calls (`install`), which costs microseconds and needs neither
libseccomp nor any file inside the sandbox.

Denied with EPERM (the program sees `PermissionError`):
- new sockets of any family (`socket`, `socketpair`): the child's only
  channels are the result pipe and, with prefix snapshots, the command
  socket the worker created before forking;
- namespaces and mounts (`unshare`, `setns`, `clone` with a CLONE_NEW* flag,
  `mount` and the new mount API, `pivot_root`, `chroot`);
- `ptrace`, `process_vm_readv/writev`, `kcmp`, `pidfd_getfd`;
- io_uring (it can open sockets without the `socket` syscall);
- kernel surfaces a program never needs (`bpf`, `perf_event_open`,
  `userfaultfd`, `keyctl`, `add_key`, `request_key`, module loading,
  `kexec_*`, `open_by_handle_at`);
- permission changes (`chmod` family, `chown` family): the /dev nodes the
  sandbox binds are the host's;
- signals to the sandbox's init (pid 1) and to the worker (pid 2, also its
  process group) or to every process (`kill(-1)`), by any route (`kill`,
  `tkill`, `tgkill`, `rt_sigqueueinfo`, `rt_tgsigqueueinfo`, `pidfd_open`):
  a program may not take its worker down (which would cost a restart);
- without `forks`: every new process (`fork`, `vfork`, `clone` without
  CLONE_THREAD); threads still work.
`clone3` answers ENOSYS (its flags sit behind a pointer the filter cannot
read), so the C library falls back to `clone`, whose flags it can.
Syscalls of a foreign architecture (the 32-bit entry points) kill the process.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import tempfile
from typing import Optional, Tuple

_DENY = ("socket", "socketpair", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
         "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr",
         "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
         "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
         "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
         "open_by_handle_at", "name_to_handle_at", "acct", "swapon", "swapoff", "reboot",
         "io_uring_setup", "io_uring_enter", "io_uring_register",
         "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat")
WORKER_PID = 2  # the worker's pid in the sandbox's PID namespace (bwrap's init is 1)
PROTECTED_PIDS = (1, WORKER_PID, -1, -WORKER_PID)  # as signal targets (negative: groups / all)
_CLONE_THREAD = 0x00010000
_CLONE_NEW = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
              | 0x40000000 | 0x00000080)  # NS, CGROUP, UTS, IPC, USER, PID, NET, TIME


@functools.cache
def seccomp_program(forks: bool) -> Tuple[Optional[bytes], str]:
    """(BPF bytes, "") or (None, what is missing). Cached per `forks`."""
    try:
        import pyseccomp as sc
    except Exception as e:  # noqa: BLE001  (no binding, or no libseccomp.so)
        return None, (f"no seccomp: {e} (install the pinned `pyseccomp` (setup.py) and the "
                      "system library libseccomp2)")
    try:
        f = sc.SyscallFilter(sc.ALLOW)
        eperm = sc.ERRNO(errno.EPERM)
        for name in _DENY:
            try:
                f.add_rule(eperm, name)
            except (OSError, RuntimeError, ValueError):
                pass  # a syscall this kernel/libseccomp does not know cannot be called either
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        # clone's flags are its first argument on x86-64 and arm64.
        for bit in _bits(_CLONE_NEW):
            f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, bit, bit))
        for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open"):
            for pid in PROTECTED_PIDS:
                f.add_rule(eperm, name, sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, pid & 0xFFFFFFFF))
        if not forks:
            for name in ("fork", "vfork"):
                f.add_rule(eperm, name)
            f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
        with tempfile.TemporaryFile() as tmp:
            f.export_bpf(tmp)
            tmp.seek(0)
            return tmp.read(), ""
    except Exception as e:  # noqa: BLE001
        return None, f"no seccomp: libseccomp could not build the filter: {e}"


def _bits(mask: int):
    return [1 << i for i in range(32) if mask >> i & 1]


_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(bpf: bytes) -> None:
    """Installs the filter on this process (irrevocable; inherited by children)."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _Fprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
