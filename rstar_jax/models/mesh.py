"""The device mesh ('data', 'fsdp', 'tensor') and multi-host start-up.

`make_mesh` builds the mesh from `MeshConfig`: one axis may be -1 and takes
the devices the others leave; sizes that do not multiply to the device
count are an error that names them (a silently smaller mesh would idle
hardware). `maybe_initialize_distributed` calls `jax.distributed.initialize`
only when there is more than one process to connect; it must run before the
first JAX computation of a multi-host job.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from rstar_jax.config.schema import DistributedConfig, MeshConfig

log = logging.getLogger(__name__)

AXES = ("data", "fsdp", "tensor")

_initialized = False


def mesh_shape(mesh_cfg: MeshConfig, num_devices: int) -> Tuple[int, int, int]:
    """Resolves the -1 axis; raises ValueError naming the sizes on mismatch."""
    sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    named = ", ".join(f"{a}={s}" for a, s in zip(AXES, sizes))
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh ({named}): at most one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh ({named}): sizes must be positive or -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"mesh ({named}): the fixed axes ({known} devices) do not divide "
                f"the {num_devices} available devices")
        sizes[sizes.index(-1)] = num_devices // known
    elif known != num_devices:
        raise ValueError(
            f"mesh ({named}) needs {known} devices but {num_devices} are available; "
            "set one axis to -1 to take the rest")
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(mesh_cfg: MeshConfig, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A `Mesh` over `devices` (default: all) with Auto axes ('data', 'fsdp', 'tensor')."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    types = (AxisType.Auto,) * len(AXES)
    try:
        return jax.make_mesh(shape, AXES, axis_types=types, devices=devices)
    except (TypeError, ValueError, NotImplementedError):
        # Device subsets the topology-aware builder cannot place: plain order.
        return Mesh(np.asarray(devices, dtype=object).reshape(shape), AXES, axis_types=types)


def _env_process_count() -> int:
    """How many processes the usual launcher variables announce (1 if none)."""
    for var in ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE"):
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES")
    if hosts and "," in hosts:
        return len(hosts.split(","))
    return 1


def should_initialize(dcfg: DistributedConfig) -> bool:
    """True when `dcfg` or the environment asks for more than one process."""
    if dcfg.enabled == "off":
        return False
    if dcfg.enabled == "on":
        return True
    if dcfg.num_processes is not None:
        return dcfg.num_processes > 1
    if dcfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    return _env_process_count() > 1


def maybe_initialize_distributed(dcfg: DistributedConfig) -> bool:
    """Runs `jax.distributed.initialize` when needed; idempotent.

    Returns True when the process is (now or already) part of a
    multi-process job, False on a single process.
    """
    global _initialized
    if _initialized or _already_initialized():
        return True
    if not should_initialize(dcfg):
        log.debug("single process: jax.distributed not initialised")
        return False
    kwargs = {
        "coordinator_address": dcfg.coordinator_address,
        "num_processes": dcfg.num_processes,
        "process_id": dcfg.process_id,
        "local_device_ids": dcfg.local_device_ids,
    }
    jax.distributed.initialize(**{k: v for k, v in kwargs.items() if v is not None})
    _initialized = True
    log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True


def _already_initialized() -> bool:
    check = getattr(jax.distributed, "is_initialized", None)
    return bool(check()) if check is not None else False
