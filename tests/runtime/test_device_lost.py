"""A device lost while a bundle loads: loaded again on a new logical device, said on stderr,
at most LOAD_ATTEMPTS times (see iree_glm/runtime/devices.py for why lavapipe loses devices).

The loss is injected where IREE reports it, creating the VM context (whose initializers upload
the weights), on the CPU bundle; tests/test_multidevice.py does the same on the lavapipe stage.
"""

from __future__ import annotations

import pytest

from iree_glm.runtime import Session
from iree_glm.runtime.devices import LOAD_ATTEMPTS, DeviceFailure, DeviceLostWarning, hal_device

from ..helpers import lose_devices

PROMPT = [5, 17, 99, 3, 42, 7]


def test_a_lost_device_is_replaced_and_the_load_retried(glm4_bundle, monkeypatch):
    reference = Session.load(glm4_bundle).generate(PROMPT, max_new_tokens=6).generated_ids
    first = hal_device("local-task")
    calls = lose_devices(monkeypatch, {1, 2})
    with pytest.warns(DeviceLostWarning, match="local-task device was lost while loading") as seen:
        session = Session.load(glm4_bundle)
    # two losses and the load that succeeds; then the inline module's context (short prefills), if any
    assert calls == ["injected", "injected", "ok"] + ["ok"] * (session._inline is not None)
    assert [str(w.message)[-23:] for w in seen] == ["logical device (2 of 3)", "logical device (3 of 3)"]
    assert session._device is not first and session._device is hal_device("local-task")  # a new device, kept for later loads
    assert session.generate(PROMPT, max_new_tokens=6).generated_ids == reference


def test_a_device_lost_every_time_stops_in_one_line(glm4_bundle, monkeypatch):
    calls = lose_devices(monkeypatch, set(range(1, LOAD_ATTEMPTS + 1)))
    with pytest.warns(DeviceLostWarning), pytest.raises(DeviceFailure, match=rf"lost {LOAD_ATTEMPTS} times while loading: .*VK_ERROR_DEVICE_LOST") as e:
        Session.load(glm4_bundle)
    assert len(calls) == LOAD_ATTEMPTS and "\n" not in str(e.value)


def test_other_load_errors_are_not_retried(glm4_bundle, monkeypatch):
    calls = lose_devices(monkeypatch, {1}, message="INVALID_ARGUMENT; something else")
    with pytest.raises(RuntimeError, match="something else"):
        Session.load(glm4_bundle)
    assert len(calls) == 1
