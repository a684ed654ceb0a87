"""TEMPORARY stub (replaced by the weights branch at merge)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from prove_jobs.spec import Sweep


@dataclass(frozen=True)
class Checkpoint:
    source: str

    @property
    def label(self) -> str:
        return Path(self.source).name


def checkpoint_for(sweep: Sweep, model: str) -> Checkpoint | None:
    tree = ast.parse(sweep.model_template(model).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "pretrained":
            value = ast.literal_eval(node.value)
            return Checkpoint(value) if isinstance(value, str) else None
    return None
