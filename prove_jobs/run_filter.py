"""Which runs a command line names: ``--model``, ``--variant`` and ``--seed``, each repeatable (none given: every run).

One filter for a sweep's runs (:meth:`prove_jobs.spec.Sweep.runs`), the runs found under ``--root`` and the
statuses a command shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

TYPE_CHECKING = False  # not typing's: see cli/parser.py
if TYPE_CHECKING:
    from prove_jobs.runs import Run


@dataclass(frozen=True)
class RunFilter:
    """The models, variants and seeds asked for; an empty one asks for none in particular: every one."""

    models: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()

    @classmethod
    def of(cls, models: Iterable[str] = (), variants: Iterable[str] = (), seeds: Iterable[int] = ()) -> RunFilter:
        return cls(tuple(models), tuple(variants), tuple(seeds))

    def matches(self, run: Run, *, seed: int | None = None) -> bool:
        """Is ``run`` asked for? ``seed``: the seed it trains with where its folder names none (a one-seed
        variant's run: its sweep's or its metadata's); by default its folder's."""
        seed = run.seed if seed is None else seed
        return ((not self.models or run.model in self.models) and (not self.variants or run.variant in self.variants)
                and (not self.seeds or seed in self.seeds))

    def apply(self, runs: Iterable[Run], seed_of: Callable[[Run], int | None] = lambda run: None) -> list[Run]:
        """The runs asked for, in their order; ``seed_of``: as ``matches``' ``seed``."""
        return [run for run in runs if self.matches(run, seed=seed_of(run))]

    def found(self, runs: Iterable[Run]) -> list[Run]:
        """The runs found under ``--root`` asked for, each by the seed it trained with (:func:`trained_seed`):
        ``--seed 0`` names a one-seed run in ``<model>/`` as ``status`` shows it, not only a ``seed0/`` folder."""
        return self.apply(runs, seed_of=trained_seed if self.seeds else lambda run: None)

    def by_folder(self) -> RunFilter:
        """The models and variants alone: what a run's folder says; its seed may be its metadata's."""
        return RunFilter(self.models, self.variants)


def trained_seed(run: Run) -> int | None:
    """The seed ``run`` trains with: its ``seed<k>/`` folder's, else the one its metadata recorded (None: none)."""
    if run.seed is not None:
        return run.seed
    from prove_jobs.metadata import read_meta_quietly

    meta = read_meta_quietly(run.run_dir)
    return meta.seed if meta is not None else None
