"""Budgets a policy must meet, resolved from a profile (and, later, command-line overrides)."""

from __future__ import annotations

from dataclasses import dataclass

from smpq_onnx.hardware.cost import Costs
from smpq_onnx.hardware.profile import DeviceProfile
from smpq_onnx.model.importer import ImportedModel

W8A8_BITS = 8 * 8


@dataclass(frozen=True)
class Budget:
    bops: int | None = None
    weight_bytes: int | None = None
    peak_activation_bytes: int | None = None
    latency_s: float | None = None

    @classmethod
    def from_profile(cls, profile: DeviceProfile, model: ImportedModel) -> Budget:
        """Memory limits and default budgets of ``profile``; the tighter one where both exist."""
        b = profile.budgets
        bops = b.bops
        if b.bops_ratio is not None:
            from_ratio = int(b.bops_ratio * model.total_macs * W8A8_BITS)
            bops = from_ratio if bops is None else min(bops, from_ratio)
        return cls(
            bops=bops,
            weight_bytes=_tighter(profile.memory.flash_bytes, b.flash_bytes),
            peak_activation_bytes=_tighter(profile.memory.sram_bytes, b.sram_bytes),
            latency_s=b.latency_s,
        )

    def fits(self, costs: Costs) -> bool:
        """Whether ``costs`` meet every budget that is set."""
        return all(line.fits for line in self.check(costs))

    def check(self, costs: Costs) -> list[BudgetLine]:
        """One line per budget that is set."""
        lines = []
        for name, limit in (("bops", self.bops), ("weight_bytes", self.weight_bytes),
                            ("peak_activation_bytes", self.peak_activation_bytes),
                            ("latency_s", self.latency_s)):
            if limit is None:
                continue
            used = getattr(costs, name)
            lines.append(BudgetLine(name, used, limit, used is not None and used <= limit))
        return lines


@dataclass(frozen=True)
class BudgetLine:
    resource: str
    used: float | None
    limit: float
    fits: bool


def _tighter(a: int | None, b: int | None) -> int | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None
