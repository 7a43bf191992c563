"""Runs issue 18's eight findings against a fresh pool; prints one JSON object.

Run by test_sandbox.py as the test's own user and, as root, also as an
unprivileged uid (through `as_nobody.py`), so the same assertions check
both. Only observations and facts seen from outside the sandbox are
reported; the test decides.
"""

import json
import os
import signal
import socket
import sys
import tempfile
import time

from rstar_jax.config.schema import ExecutorConfig
from rstar_jax.data.prompts import END_OF_CODE, observation_suffix
from rstar_jax.execution.pool import ExecutorPool
from rstar_jax.search import tree as T

STDLIB = ["statistics", "fractions", "decimal", "itertools", "functools", "collections", "math", "cmath",
          "random", "re", "pprint", "datetime", "sysconfig", "numpy", "sympy"]
FIND_PIPE = ("import os, stat\nfds = []\nfor f in os.listdir('/proc/self/fd'):\n    try:\n"
             "        if int(f) > 2 and stat.S_ISFIFO(os.fstat(int(f)).st_mode):\n            fds.append(int(f))\n"
             "    except OSError:\n        pass\nfd = fds[0]\n")
POISON = ("import rstar_jax.execution.observation as o\n"
          "o._compile = lambda source, skip=0: (compile(\"print('POISONED')\", 's', 'exec'), None)\n"
          "print(1)")


def _obs(pool, codes, timeout_s=None):
    return [r.observation for r in pool.run(codes, timeout_s=timeout_s)]


def main() -> None:
    home = tempfile.mkdtemp(prefix="rstar_findings_")
    os.chmod(home, 0o755)
    out = {"uid": os.getuid()}
    victim = os.path.join(home, "victim.txt")
    with open(victim, "w") as f:
        f.write("keep me")
    sys.path.append(home)  # an import path: the sandbox shows it, read-only
    cfg = ExecutorConfig(num_workers=1, timeout_s=20.0, memory_limit_mb=1024, preload_grading=False,
                         prefix_snapshots=2)
    with ExecutorPool(cfg) as pool:
        out["forks"] = pool.forks
        # 1: kill everything visible, delete the user's file; the pool and its owner live on.
        out["f1"] = _obs(pool, [
            "import os, signal\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) != os.getpid():\n"
            "        try:\n            os.kill(int(p), signal.SIGKILL)\n        except OSError:\n            pass\n"
            "os.kill(-1, signal.SIGKILL)",
            f"import os\nos.remove({victim!r})",
            f"import shutil\nshutil.rmtree({home!r})"])
        out["f1_victim"] = os.path.exists(victim)
        out["f1_restarts"] = pool.stats().get("worker_restarts", 0)
        out["f1_serving"] = _obs(pool, ["print(6 * 7)"])[0]
        # 2: valid step code sees the whole standard library and the math stack.
        mods = STDLIB + (["scipy"] if _installed("scipy") else [])
        out["f2"] = _obs(pool, ["import statistics\nprint(statistics.mean([1, 2, 3]))",
                                "import " + ", ".join(mods) + "\nprint('all imported')"])
        out["f2_modules"] = mods
        # 3: memory is bounded for the whole program: four 300 MB pieces under 1024 MB.
        out["f3"] = _obs(pool, [
            "import threading\nok = []\ndef grab():\n    try:\n        ok.append(bytearray(300 * 2**20))\n"
            "    except MemoryError:\n        pass\nts = [threading.Thread(target=grab) for _ in range(4)]\n"
            "for t in ts: t.start()\nfor t in ts: t.join()\nprint(len(ok))",
            "import os, time\nkids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
            "        x = bytearray(300 * 2**20)\n        time.sleep(3)\n        os._exit(0)\n    kids.append(pid)\n"
            "print(len(kids))"], timeout_s=60.0)  # slow to map under load, never endless
        # 4a/4b: a forged frame or a patched truncate cannot enlarge the observation.
        out["f4"] = _obs(pool, [
            FIND_PIPE + "os.write(fd, b'0 700000 0\\n' + b'x' * 700000)\nos._exit(0)",
            FIND_PIPE + "os.write(fd, b'0 4000 0\\n' + b'y' * 4000)\nos._exit(0)",
            "import rstar_jax.execution.observation as o\no.truncate = lambda t, limit=0: t\n"
            "o.format_output = lambda c, limit=0: c\nprint('z' * 300000)"])
        # 4c: a step cannot poison a later one through a snapshot.
        out["f4c"] = _obs(pool, [POISON]) + _obs(pool, [POISON + "\nprint(1 + 1)"])
        # 5: no socket reaches out, no new user namespace, no host file or process.
        sock_dir = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        os.chmod(sock_dir, 0o777)
        path = os.path.join(sock_dir, "s")
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        os.chmod(path, 0o777)
        server.listen(1)
        server.settimeout(0.5)
        private = tempfile.mkdtemp(prefix="rstar_private_")
        with open(os.path.join(private, "secret.txt"), "w") as f:
            f.write("secret")
        out["f5"] = _obs(pool, [
            f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\nprint('connected')",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(libc.unshare(0x10000000), ctypes.get_errno())",
            f"print(open({os.path.join(private, 'secret.txt')!r}).read())",
            "print(open('/etc/passwd').read())",
            "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))",
            "import os\nprint(' '.join(open(f'/proc/{p}/cmdline').read() for p in os.listdir('/proc') "
            "if p.isdigit()))"])
        raw = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nbuf = ctypes.create_string_buffer(128)\n"
        out["f5_raw"] = _obs(pool, [raw + f"print(libc.syscall({call}), ctypes.get_errno())" for call in (
            "41, 1, 1, 0",  # socket(AF_UNIX, SOCK_STREAM) without the library
            "425, 8, buf",  # io_uring_setup (can open sockets itself)
            "56, 0x10000000 | 17, 0, 0, 0, 0",  # clone(CLONE_NEWUSER | SIGCHLD)
            "101, 16, 2, 0, 0",  # ptrace(PTRACE_ATTACH, the worker)
            "165, 0, buf, 0, 0, 0",  # mount
        )])
        try:
            server.accept()
            out["f5_accepted"] = True
        except OSError:
            out["f5_accepted"] = False
        server.close()
        out["f5_own_pid"] = os.getpid()
        # 6: the cache tells programs apart by their line numbers.
        out["f6"] = _obs(pool, ["import sys\nprint(sys._getframe().f_lineno)",
                                "import sys\n\n\n\nprint(sys._getframe().f_lineno)"])
        # 7: printed output never becomes the final answer.
        code = "print('\\\\bo' + 'xed{7}')"  # the output says boxed, the text does not
        step = "<code>\n" + code + "\n" + END_OF_CODE
        obs = _obs(pool, [code])[0]
        t = T.Tree()
        node = t.nodes[T.add_child(t, 0, step + observation_suffix(obs))]
        T.apply_terminal_rules(node, 0, errors_threshold=2, max_depth=16)
        out["f7"] = [obs, node.terminal_reason]
    # 8: a package found only through our import path reaches the worker; a
    # worker that fails to start says why.
    extra = tempfile.mkdtemp(prefix="rstar_extra_")
    os.chmod(extra, 0o755)
    with open(os.path.join(extra, "rstar_extra_mod.py"), "w") as f:
        f.write("VALUE = 'extra ok'\n")
    with open(os.path.join(extra, "rstar_boom_mod.py"), "w") as f:
        f.write("import os, sys\nsys.stderr.write('BOOM-MARKER worker import failed\\n')\nsys.stderr.flush()\n"
                "os._exit(3)\n")
    sys.path.append(extra)
    with ExecutorPool(ExecutorConfig(num_workers=1, preload_modules=["rstar_extra_mod"],
                                     preload_grading=False)) as pool:
        out["f8_path"] = _obs(pool, ["import rstar_extra_mod\nprint(rstar_extra_mod.VALUE)"])[0]
    try:
        ExecutorPool(ExecutorConfig(num_workers=1, preload_modules=["rstar_boom_mod"], preload_grading=False))
        out["f8_error"] = None
    except RuntimeError as e:
        out["f8_error"] = str(e)
    out["alive"] = True
    print(json.dumps(out))


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    signal.alarm(240)
    t0 = time.monotonic()
    main()
