"""A run's starts as a lineage: which trained, resumed, restarted from scratch, were test-only or aborted, and
which produced the result (docs/status.md, "Time").

Each start is one process that wrote logs into the work dir: an mmengine ``<YYYYMMDD_HHMMSS>/`` folder, or an
mmseg 0.x ``<ts>.log.json`` at its top. A training start's records from its first train iteration on replace
those of every earlier start (a resume repeats the iterations after its checkpoint; a restart from scratch all
of them). So, from the newest start back, a start *counts* when it trained below every later start's first
iteration: some of its iterations are in the result. One whose every iteration a later start trained again is
*replaced*; a start that trained nothing is *test-only* (``Runner.test()``: test metrics, no train record) or
*aborted* (crashed while building, cancelled while loading).
"""

from __future__ import annotations

from dataclasses import dataclass

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

TRAINED, RESUMED, RESTARTED, TEST_ONLY, ABORTED = "trained", "resumed", "restarted", "test-only", "aborted"
KINDS = (TRAINED, RESUMED, RESTARTED, TEST_ONLY, ABORTED)


@dataclass(frozen=True)
class Facts:
    """What a start's logs say, as the lineage needs it (times: Unix seconds on the node's clock)."""

    name: str
    first_iter: int | None  # its first train record's iteration (None: it trained nothing)
    last_iter: int | None  # its last train record's
    resumed_from: int | None  # the checkpoint's iteration its log says it resumed from
    first_time: float | None  # its first train record's timestamp
    end_time: float | None  # its last training line's (train record, checkpoint, val result)
    tested: bool = False  # a Runner.test() start: test metrics, and no train record
    fresh: bool = False  # its first train record is within one log interval of 0: it began from scratch

    def begins(self) -> int | None:
        """Where its training began: 0 from scratch, else its first train record's iteration (None: it trained
        nothing). A start logged every 100 iterations that begins at 100 is a restart, not a resume at 100."""
        if self.first_iter is None:
            return None
        return 0 if self.fresh and not self.resumed_from else self.first_iter


@dataclass(frozen=True)
class Start:
    """One start of the lineage; ``counted``: some of its iterations are in the result (its wall time counts)."""

    name: str
    kind: str  # one of KINDS: how it began (a replaced start keeps its kind; replaced_by says it is replaced)
    first_iter: int | None = None
    last_iter: int | None = None
    resumed_from: int | None = None
    wall_s: float | None = None  # its first train record to its last training line; None: no timestamps
    counted: bool = False
    replaced_by: str | None = None  # the later start that trained all of its iterations again

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "first_iter": self.first_iter, "last_iter": self.last_iter,
                "resumed_from": self.resumed_from, "wall_s": None if self.wall_s is None else round(self.wall_s, 1),
                "counted": self.counted, "replaced_by": self.replaced_by}

    def to_row(self) -> tuple[object, ...]:
        return (self.name, self.kind, self.first_iter, self.last_iter, self.resumed_from, self.wall_s,
                self.counted, self.replaced_by)

    @classmethod
    def from_row(cls, row: Any) -> Start:
        name, kind, first_iter, last_iter, resumed_from, wall_s, counted, replaced_by = row
        if not (isinstance(name, str) and kind in KINDS and (wall_s is None or isinstance(wall_s, float))):
            raise ValueError("bad start")
        return cls(name, kind, first_iter, last_iter, resumed_from, wall_s, bool(counted), replaced_by)

    def words(self) -> str:
        """``trained 0-4000``, ``resumed from 4000 to 8000``, ... and whether it counts."""
        span = f"{self.first_iter}-{self.last_iter}"
        if self.kind == TRAINED:
            said = f"trained 0-{self.last_iter}" if self.resumed_from is None else f"trained {span}"
        elif self.kind == RESTARTED:
            said = f"restarted from scratch, 0-{self.last_iter}"
        elif self.kind == RESUMED:
            said = (f"resumed from {self.resumed_from} to {self.last_iter}" if self.resumed_from is not None
                    else f"resumed, {span}")
        elif self.kind == TEST_ONLY:
            said = "test-only"
        else:
            said = "aborted (no training record)"
        if self.wall_s is not None:
            said += f" in {_clock(self.wall_s)}"
        if self.replaced_by is not None:
            return f"{said}, replaced by {self.replaced_by}: not counted"
        return said if self.counted else f"{said}: not counted"


def _clock(seconds: float) -> str:
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    clock = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {clock}" if days else clock


def classify(facts: Sequence[Facts]) -> tuple[Start, ...]:
    """The lineage of a run's starts (in start order)."""
    kinds: list[str] = []
    origin: int | None = None  # the lowest first iteration of the training starts so far
    for f in facts:
        begins = f.begins()
        if begins is None:
            kinds.append(TEST_ONLY if f.tested else ABORTED)
            continue
        if f.resumed_from is not None and f.resumed_from > 0:
            kinds.append(RESUMED)
        elif origin is None:
            kinds.append(TRAINED)
        else:
            kinds.append(RESTARTED if begins <= origin else RESUMED)
        origin = begins if origin is None else min(origin, begins)
    starts: list[Start] = []
    low: tuple[int, str] | None = None  # the lowest first iteration of the later training starts, and whose
    for f, kind in zip(reversed(facts), reversed(kinds), strict=True):
        begins = f.begins()
        wall = None
        if begins is not None and f.first_time is not None and f.end_time is not None:
            wall = max(0.0, f.end_time - f.first_time)
        counted = begins is not None and (low is None or begins < low[0])
        replaced_by = low[1] if begins is not None and not counted and low is not None else None
        starts.append(Start(f.name, kind, f.first_iter, f.last_iter, f.resumed_from, wall, counted, replaced_by))
        if begins is not None and (low is None or begins <= low[0]):
            low = (begins, f.name)
    return tuple(reversed(starts))


def bounds(facts: Sequence[Facts]) -> list[int | None]:
    """Per start, the iteration from which later starts' records replace its own (None: none do)."""
    out: list[int | None] = []
    low: int | None = None
    for f in reversed(facts):
        out.append(low)
        if (begins := f.begins()) is not None:
            low = begins if low is None else min(low, begins)
    return out[::-1]


def wall_seconds(lineage: Sequence[Start]) -> float | None:
    """The run's wall time: the counted starts' own, summed (no gaps between them); ``None`` when no start counts
    or a counted one has no timestamps (no text log)."""
    counted = [s.wall_s for s in lineage if s.counted]
    if not counted or any(w is None for w in counted):
        return None
    return sum(w for w in counted if w is not None)


def lineage_lines(lineage: Sequence[Start], *, live: bool = False) -> list[str]:
    """``status RUN_DIR``'s lineage section: a line per start (when there are several), the result's marked.
    ``live``: the run is running or starting, so a newest start without a train record is still starting."""
    if len(lineage) < 2:
        return []
    result = max((s for s in lineage if s.counted), key=lambda s: s.last_iter or 0, default=None)
    lines = ["Starts (Elapsed is the sum of the counted ones):"]
    for s in lineage:
        said = s.words()
        if live and s is lineage[-1] and s.kind == ABORTED:
            said = "starting (no training record yet)"
        lines.append(f"  {s.name}  {said}{' (result)' if s is result else ''}")
    return lines
