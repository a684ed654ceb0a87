"""The comparison report the group used to write by hand, built from the runs' statuses.

``build.build_report`` turns the statuses of a sweep's runs (or of the runs found under a folder) into
a :class:`Report` (plain data, also the ``--format json`` output); ``markdown.render_markdown``
writes it the way ``cityscapes-training-comparison.md`` does; ``plots`` draws the PNGs
(matplotlib, the optional ``report`` extra, imported only there); ``make.make_report`` reads the
runs through the log cache and writes the files. A variant trained with several seeds is
compared by its mean over them, with the spread and an interval (``stats``, docs/statistics.md).
"""

from prove_jobs.report.build import (
    Comparison,
    Report,
    RunTime,
    Scope,
    TrainingTimeOf,
    build_report,
    final_miou,
    sweep_scope,
    training_seconds,
)

__all__ = ["Comparison", "Report", "RunTime", "Scope", "TrainingTimeOf", "build_report", "final_miou", "sweep_scope",
           "training_seconds"]
