"""How ``recipe: auto`` orders passing candidates by speed: interleaved, repeated timing.

One measurement per candidate, taken while other work shares the machine, can put a slower
variant first (seen: a partial variant at 64 ms chosen over a 51 ms preset on a loaded VNNI CPU).
So the passing Q/DQ structures are timed round-robin — every structure once per round, several
rounds — each structure's rounds summarised by their median and their spread (lowest to highest
round), and a difference the spreads cannot tell apart is a tie: among the structures whose
spread overlaps the fastest one's, the one with the fewest float parts wins (then the fewest
float quantizers, then the lower median). The evidence — every round's number — goes into the
trace. Pure: it knows nothing of engines; ``measure(key)`` is the caller's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TIE_RULE = ("ties: structures whose spread (lowest to highest round) overlaps the fastest median's "
            "structure's spread; broken by fewer float parts, then fewer float quantizers, then lower median")


@dataclass
class Timing:
    """The rounds of one Q/DQ structure (latencies, lower is better; None: a failed measurement)."""

    label: str
    float_parts: int
    float_quantizers: int
    rounds: list[float | None] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        """The rounds that gave a number."""
        return [v for v in self.rounds if v is not None]

    @property
    def median(self) -> float | None:
        """Median of the rounds (None without any)."""
        return statistics.median(self.values) if self.values else None

    @property
    def spread(self) -> tuple[float, float] | None:
        """(lowest, highest) round."""
        return (min(self.values), max(self.values)) if self.values else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able evidence."""
        spread = self.spread
        return {"structure": self.label, "float_parts": self.float_parts, "float_quantizers": self.float_quantizers,
                "rounds": self.rounds, "median": self.median, "low": spread[0] if spread else None,
                "high": spread[1] if spread else None}


def ties(a: Timing, b: Timing) -> bool:
    """Whether the two structures' spreads overlap: their difference is inside the noise."""
    sa, sb = a.spread, b.spread
    return sa is not None and sb is not None and sa[0] <= sb[1] and sb[0] <= sa[1]


def time_round_robin(keys: Sequence[Hashable], measure: Callable[[Hashable], float | None], rounds: int,
                     taken: Mapping[Hashable, Sequence[float | None]] | None = None,
                     ) -> dict[Hashable, list[float | None]]:
    """``rounds`` measurements of every key, interleaved (round 1 of all keys, then round 2, …).

    ``taken``: measurements already made per key (they count as its first rounds).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    out: dict[Hashable, list[float | None]] = {k: list((taken or {}).get(k, ())) for k in keys}
    for r in range(rounds):
        for k in keys:
            if len(out[k]) <= r:  # round r not yet taken for this key
                out[k].append(measure(k))
    return out


def fastest(timings: Sequence[Timing]) -> tuple[Timing, list[Timing]]:
    """The chosen structure and the structures tied with the fastest median (``TIE_RULE``).

    Structures without any number are never chosen while one has a number.
    """
    if not timings:
        raise ValueError("no structure to choose from")
    timed = [t for t in timings if t.median is not None]
    if not timed:
        raise ValueError("no structure has a latency")
    lead = min(timed, key=lambda t: (t.median, t.float_parts, t.float_quantizers))
    tied = [t for t in timed if t is lead or ties(t, lead)]
    chosen = min(tied, key=lambda t: (t.float_parts, t.float_quantizers, t.median))
    return chosen, tied


__all__ = ["TIE_RULE", "Timing", "fastest", "ties", "time_round_robin"]
