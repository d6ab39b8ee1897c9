"""HAL devices for sessions, and a new logical device when one is lost while a bundle loads.

IREE 3.13's Vulkan queue wakes its completion thread by signalling a timeline semaphore with a
value taken from a counter, from whichever thread finished a wait; two threads can signal out of
order, and Mesa's lavapipe (timelines emulated) treats the lower value as the device being lost.
It shows while a bundle's weights are uploaded (many queued reads), on a busy machine: 6 of 60
loads of the 3-device test bundle with three busy processes beside them. The Vulkan spec's
answer to a lost device is a new logical device, so loading retries on one, says so on stderr,
and gives up with one line after `LOAD_ATTEMPTS`. A device lost later, mid-request, is not retried
(its KV cache is gone): the request stops with `DeviceFailure`.
"""

from __future__ import annotations

import threading
import warnings
from typing import Callable, TypeVar

from pathlib import Path

from iree_glm.bundle.cpu_features import host_arch, missing_features, needs_amx, request_amx
from iree_glm.bundle.manifest import Manifest
from iree_glm.errors import BundleError, RequestError

LOAD_ATTEMPTS = 3
DEVICE_LOST = "VK_ERROR_DEVICE_LOST"
# lavapipe under load can fail the initializers' upload fence instead of reporting a lost device:
# the weights never arrived, so loading again on a new device is as safe.
UPLOAD_FENCE_FAILED = "DATA_LOSS; while invoking native function hal.fence.await"

T = TypeVar("T")

_devices: dict[str, object] = {}
_devices_lock = threading.Lock()


class DeviceFailure(RequestError):
    """A device failed (lost) during a call or, repeatedly, while loading; no silent change of device."""


class DeviceLost(Exception):
    """A device was lost while a context was created on it (caught by `load_retrying`)."""

    def __init__(self, driver: str, detail: str):
        super().__init__(f"{driver}: {detail}")
        self.driver = driver
        self.detail = detail


class DeviceLostWarning(UserWarning):
    """Loading was retried on a new logical device."""


def hal_device(driver: str):
    """The process's device for `driver` (one per driver, like `iree.runtime.get_device`, but a
    lost one is replaced). Raises ValueError / RuntimeError when the driver has no device."""
    import iree.runtime as rt

    with _devices_lock:
        if driver not in _devices:
            _devices[driver] = rt.get_device(driver, cache=False)
        return _devices[driver]


def load_module(instance, driver: str, device, parameters, module_file: str):
    """(main module, context) for a bundle module on `device` (`hal_device(driver)`), with the
    bundle's parameter provider; the context's initializers upload the weights. A device lost
    meanwhile is forgotten (the next `hal_device` makes a new one) and raised as `DeviceLost`."""
    import iree.runtime as rt

    params = rt.create_io_parameters_module(instance, parameters)
    hal = rt.create_hal_module(instance, device)
    main = map_module(instance, module_file)
    try:
        return main, rt.VmContext(instance, modules=[hal, params, main])
    except RuntimeError as e:
        if DEVICE_LOST not in str(e) and UPLOAD_FENCE_FAILED not in str(e):
            raise
        detail = first_line(e)
    # Outside the except block: IREE's binding fails (SystemError) when an mmapped module is
    # freed while an exception unwinds, so the modules go first.
    del main, hal, params
    with _devices_lock:
        if _devices.get(driver) is device:
            del _devices[driver]
    raise DeviceLost(driver, detail)


def map_module(instance, module_file: str):
    """The compiled module mapped read-only (`VmModule.mmap` opens the file for writing, which
    fails on read-only storage: an app's bundle, a shared or mounted folder). A damaged file (one
    that `--no-verify` did not hash first) is a `BundleError` naming it."""
    import mmap

    import iree.runtime as rt

    with open(module_file, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return rt.VmModule.wrap_buffer(instance, mapped, close_buffer=True)
    except (ValueError, RuntimeError) as e:
        mapped.close()
        raise BundleError(f"{module_file}: not a readable compiled module ({first_line(e)})") from None


def load_parameters(archive: Path):
    """The bundle's parameter archive, indexed (the modules read it mmapped, in place). A damaged
    archive is a `BundleError` naming it."""
    import iree.runtime as rt

    index = rt.ParameterIndex()
    try:
        index.load(str(archive))
    except (IndexError, ValueError, RuntimeError) as e:
        raise BundleError(f"{archive}: not a readable parameter archive ({first_line(e)})") from None
    return index


def load_retrying(load: Callable[[], T], where: str) -> T:
    """`load()`, again on new logical devices when it raises `DeviceLost`, at most LOAD_ATTEMPTS times."""
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        try:
            return load()
        except DeviceLost as lost:
            if attempt == LOAD_ATTEMPTS:
                raise DeviceFailure(f"{where}: the {lost.driver} device was lost {LOAD_ATTEMPTS} times while loading: {lost.detail}") from None
            warnings.warn(f"{where}: the {lost.driver} device was lost while loading ({lost.detail}); "
                          f"loading again on a new logical device ({attempt + 1} of {LOAD_ATTEMPTS})", DeviceLostWarning, stacklevel=2)
    raise AssertionError("unreachable")


def first_line(error: BaseException) -> str:
    """An error's first line, at most 200 characters (for one-line messages)."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def driver_available(driver: str) -> bool:
    """Whether this machine's IREE runtime has the driver and it finds a device."""
    import iree.runtime as rt

    if driver not in rt.query_available_drivers():
        return False
    try:
        return bool(rt.get_driver(driver).query_available_devices())
    except (RuntimeError, ValueError):
        return False


def check_cpu(bundle: Path, manifest: Manifest) -> None:
    """Refuse, in one line, an llvm-cpu bundle whose code this machine's CPU cannot run (another
    architecture, or a missing instruction-set feature): running it would die of SIGILL. Code
    using AMX tiles also needs the process's permission from Linux, requested here."""
    target = manifest.options.target_cpu
    if target is None:
        return
    if target.arch != host_arch():
        raise BundleError(f"{bundle}: compiled for {target.arch} ({target.cpu}); this machine is {host_arch()}")
    needed = list(target.features)
    for choice in (manifest.options.int4_kernel, manifest.options.int8_kernel, manifest.options.bf16_kernel,
                   manifest.options.attention_kernel):
        needed += [f for f in (choice.features or []) if f not in needed] if choice is not None else []
    missing = missing_features(needed)
    if missing:
        raise BundleError(f"{bundle}: compiled for {target.cpu}, whose code uses {', '.join(missing)}: this CPU lacks "
                          f"{'it' if len(missing) == 1 else 'them'} (recompile with a profile for this machine, e.g. --profile host-cpu)")
    if needs_amx(needed):
        reason = request_amx()
        if reason:
            raise BundleError(f"{bundle}: its kernels use AMX tiles, but {reason}")
