"""Energy of the timed loop, where a counter really measures it: NVML on NVIDIA GPUs, RAPL on CPUs.

``meter_for(backend, info)`` picks the counter of the device a prepared session runs on; the
worker hands it to ``timing.loop_probe`` so ``measure`` / ``measure_cuda`` read it right before
the first and right after the last timed iteration (warm-up excluded). ``EnergyMeter.result``
gives ``details.resources.energy``:

* ``{"status": "ok", "joules", "joules_per_inference", "joules_per_sequence", "counter",
  "scope"}``: the counter's difference over the timed loop, divided by the timed iterations;
* ``{"status": "not available on this engine/machine", "why": ...}``: no readable counter here
  (no NVML, a GPU without the energy counter, no powercap tree, RAPL files readable by root only,
  as on Linux since 5.10). Never an estimate: nothing is computed from TDP or utilisation.

NVML: ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded; Volta and
newer), device-wide, so other processes on the GPU count too. RAPL: the ``energy_uj`` of every
package domain (``intel-rapl:N``, not its sub-domains, which the package already contains) under
``/sys/class/powercap``; a counter that wrapped (a reading below the first) adds its
``max_energy_range_uj``. Package-wide: every process on the CPU counts, and the package includes
idle cores.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from qdqbench.core.errors import one_line
from qdqbench.core.memory import NOT_AVAILABLE

POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE = re.compile(r"^intel-rapl:\d+$")  # package domains; intel-rapl:0:0 (core, ...) are inside


def _not_available(why: str) -> dict[str, Any]:
    return {"status": NOT_AVAILABLE, "why": f"{NOT_AVAILABLE}: {why}"}


def rapl_packages(root: Path | None = None) -> tuple[list[Path], str]:
    """(package domain folders with a readable energy counter, why none) under a powercap root."""
    root = Path(root or POWERCAP_ROOT)
    if not root.is_dir():
        return [], f"no RAPL counters ({root} does not exist)"
    domains = sorted(p for p in root.iterdir() if _PACKAGE.match(p.name) and (p / "energy_uj").exists())
    if not domains:
        return [], f"no RAPL package domain under {root}"
    unreadable = []
    for d in domains:
        try:
            int((d / "energy_uj").read_text().strip())
        except PermissionError:
            unreadable.append(d.name)
        except (OSError, ValueError) as exc:
            return [], f"RAPL counter {d / 'energy_uj'} unreadable: {one_line(exc, 120, typed=False)}"
    if unreadable:
        return [], (f"RAPL energy_uj of {', '.join(unreadable)} is readable by root only "
                    "(Linux >= 5.10 restricts it); run as root or grant read access")
    return domains, ""


def read_rapl(domains: list[Path]) -> dict[str, int]:
    """{domain: energy_uj} now."""
    return {d.name: int((d / "energy_uj").read_text().strip()) for d in domains}


def rapl_joules(before: dict[str, int], after: dict[str, int], ranges: dict[str, int]) -> float:
    """Joules between two RAPL readings, summed over domains, each wrap-around undone once; pure."""
    total = 0
    for name, start in before.items():
        end = after[name]
        if end < start:  # the counter wrapped past max_energy_range_uj
            end += ranges[name]
        total += end - start
    return total / 1e6


class EnergyMeter:
    """Reads one energy counter at the start and end of the timed loop (``timing.loop_probe``)."""

    def __init__(self, counter: str, scope: str, read: Any = None, why: str = "",
                 finish: Any = None):
        self.counter, self.scope, self._read, self.why = counter, scope, read, why
        self._finish = finish  # (before, after) -> joules; default after - before
        self._before: Any = None
        self._after: Any = None
        self.error = ""

    def start(self) -> None:
        """Reading before the first timed iteration."""
        if self._read is not None:
            try:
                self._before = self._read()
            except Exception as exc:  # a counter that fails mid-run: a note, never a failed cell
                self.error = one_line(exc, 200)

    def stop(self) -> None:
        """Reading after the last timed iteration."""
        if self._read is not None and self._before is not None:
            try:
                self._after = self._read()
            except Exception as exc:
                self.error = one_line(exc, 200)

    def result(self, iterations: int, batch: int) -> dict[str, Any]:
        """``details.resources.energy`` for ``iterations`` timed inferences of ``batch`` sequences."""
        if self._read is None:
            return _not_available(self.why)
        if self.error or self._before is None or self._after is None:
            return _not_available(f"{self.counter} reading failed: {self.error or 'the timed loop never ran'}")
        joules = (self._finish(self._before, self._after) if self._finish
                  else float(self._after - self._before))
        if joules <= 0 or iterations < 1:
            return _not_available(f"{self.counter} did not advance over the timed loop (its update "
                                  "interval is longer than the loop)")
        return {"status": "ok", "joules": round(joules, 4),
                "joules_per_inference": round(joules / iterations, 6),
                "joules_per_sequence": round(joules / (iterations * max(batch, 1)), 6),
                "counter": self.counter, "scope": self.scope}


def rapl_meter(root: Path | None = None) -> EnergyMeter:
    """The CPU package energy counters (RAPL), or a meter that says why not."""
    domains, why = rapl_packages(root)
    if not domains:
        return EnergyMeter("RAPL", "", why=why)
    ranges = {}
    for d in domains:
        try:
            ranges[d.name] = int((d / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            ranges[d.name] = 2**32  # the hardware register's width when the range is not exposed
    return EnergyMeter(f"RAPL energy_uj ({', '.join(d.name for d in domains)})",
                       "CPU package-wide: every process and idle core on the package counts",
                       read=lambda: read_rapl(domains),
                       finish=lambda b, a: rapl_joules(b, a, ranges))


def nvml_meter() -> EnergyMeter:
    """The GPU's NVML total-energy counter (mJ), or a meter that says why not."""
    try:
        import pynvml
    except ImportError:
        return EnergyMeter("NVML", "", why="pynvml is not importable (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
        handle = (pynvml.nvmlDeviceGetHandleByIndex(int(visible)) if visible.isdigit()
                  else pynvml.nvmlDeviceGetHandleByUUID(visible))
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:  # no driver, no GPU, or a GPU older than Volta
        return EnergyMeter("NVML", "", why=f"NVML energy counter: {one_line(exc, 160, typed=False, join=True)}")
    return EnergyMeter("NVML nvmlDeviceGetTotalEnergyConsumption",
                       "GPU device-wide: other processes on the GPU count too",
                       read=lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle),
                       finish=lambda b, a: (a - b) / 1e3)


def meter_for(on_gpu: bool, root: Path | None = None) -> EnergyMeter:
    """NVML for a session on an NVIDIA GPU, RAPL otherwise."""
    return nvml_meter() if on_gpu else rapl_meter(root)
