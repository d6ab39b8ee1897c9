"""A power budget from the OS's thermal state, and the plan that fits it.

Linux exposes each thermal zone as `/sys/class/thermal/thermal_zoneN/temp` (millidegrees
Celsius) beside its `type` (e.g. x86_pkg_temp, cpu-0-0-usr). `ThermalPolicy` maps the hottest
zone to a power budget by steps ("60:8,75:4": from 60 C a budget of 8 W, from 75 C 4 W; below
the first step no limit) and switches the session to the fastest plan within it. An Android
app cannot read these files (SELinux); it feeds its own thermal status instead: see
docs/phases.md ("Plans at run time").
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from iree_glm.errors import UserError
from iree_glm.runtime.plans import PlanFallbackWarning

THERMAL_ROOT = Path("/sys/class/thermal")


@dataclass(frozen=True)
class ThermalStep:
    """From `celsius` (hottest zone) up, at most `watts`."""

    celsius: float
    watts: float


def parse_steps(text: str, option: str = "--thermal-policy") -> list[ThermalStep]:
    """"C:W,C:W,..." -> steps in rising temperature (budgets must not rise with it)."""
    steps = []
    for item in text.split(","):
        try:
            c, w = (float(x) for x in item.split(":"))
        except ValueError:
            raise UserError(f"{option}: '{item}' is not CELSIUS:WATTS (e.g. 60:8,75:4)") from None
        if not (math.isfinite(c) and math.isfinite(w) and w >= 0):
            raise UserError(f"{option}: '{item}': temperature and watts must be finite, watts >= 0")
        steps.append(ThermalStep(c, w))
    steps.sort(key=lambda s: s.celsius)
    if any(b.watts > a.watts for a, b in zip(steps, steps[1:])):
        raise UserError(f"{option}: a hotter step must not allow more watts ({text})")
    return steps


def read_zones(root: Path = THERMAL_ROOT) -> dict[str, float]:
    """Zone -> degrees Celsius for every readable `thermal_zone*/temp` under `root` (a zone whose
    sensor is off answers with an error and is left out)."""
    zones = {}
    for temp in sorted(Path(root).glob("thermal_zone*/temp")):
        try:
            millis = int(temp.read_text().strip())
        except (OSError, ValueError):
            continue
        kind = temp.parent / "type"
        try:
            name = f"{temp.parent.name} ({kind.read_text().strip()})"
        except OSError:
            name = temp.parent.name
        zones[name] = millis / 1000.0
    return zones


class ThermalPolicy:
    """Steps from temperature to power budget, applied to a session's plans."""

    def __init__(self, steps: list[ThermalStep], root: Path = THERMAL_ROOT):
        self.steps = steps
        self.root = Path(root)
        self._said: str | None = None  # the last fallback note (a poll repeats it only when it changes)

    def budget(self, zones: dict[str, float]) -> float:
        """The budget for these temperatures (infinite below the first step)."""
        hottest = max(zones.values())
        watts = math.inf
        for step in self.steps:
            if hottest >= step.celsius:
                watts = step.watts
        return watts

    def apply(self, session) -> str:
        """Read the zones and switch `session` to the plan for their budget; returns the plan."""
        zones = read_zones(self.root)
        if not zones:
            raise UserError(f"{self.root}: no readable thermal_zone*/temp (this OS exposes no thermal zones here)")
        plans = session.plan_set()
        name, note = plans.for_power_budget(self.budget(zones))
        if note and note != self._said:
            warnings.warn(note, PlanFallbackWarning, stacklevel=2)
        self._said = note
        return plans.use(name)

    def watch(self, session, seconds: float) -> threading.Event:
        """Apply every `seconds` on a daemon thread until the returned event is set."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(seconds):
                self.apply(session)

        threading.Thread(target=loop, name="thermal-policy", daemon=True).start()
        return stop
