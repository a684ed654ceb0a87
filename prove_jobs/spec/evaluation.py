"""A sweep's evaluation protocol: one for every model, so that their numbers compare (``[evaluation]``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prove_jobs.errors import SpecError
from prove_jobs.spec.fields import crop, refuse_unknown, require

EVALUATION_MODES = ("whole", "slide")


@dataclass(frozen=True)
class Evaluation:
    """How every run of a sweep is evaluated: one protocol for all models, so their numbers compare.

    ``whole``: each validation image inferred at once (after the test pipeline's resize); ``slide``:
    ``crop_size`` windows every ``stride`` pixels, as SegFormer's Cityscapes config does (1024, stride 768).
    """

    mode: str = "whole"
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None

    def test_cfg(self) -> dict[str, object]:
        """``model.test_cfg`` as mmseg reads it."""
        if self.mode == "whole":
            return {"mode": "whole"}
        return {"mode": "slide", "crop_size": self.crop_size, "stride": self.stride}

    def describe(self) -> str:
        if self.mode == "whole" or self.crop_size is None or self.stride is None:
            return "whole image"
        return (f"sliding window {self.crop_size[0]}×{self.crop_size[1]}, "
                f"stride {self.stride[0]}×{self.stride[1]}")


def load_evaluation(path: Path, raw: Any) -> Evaluation:
    """``[evaluation] mode = "whole"`` or ``mode = "slide", crop_size = [h, w], stride = [h, w]``."""
    if not isinstance(raw, dict):
        raise SpecError(path, "evaluation", "must be a table: mode = \"whole\" or mode = \"slide\" with crop_size "
                        "and stride")
    refuse_unknown(path, "evaluation.", raw, {"mode", "crop_size", "stride"})
    mode = raw.get("mode", "whole")
    if mode not in EVALUATION_MODES:
        raise SpecError(path, "evaluation.mode", f"must be one of {', '.join(EVALUATION_MODES)}, got {mode!r}")
    if mode == "whole":
        if "crop_size" in raw or "stride" in raw:
            raise SpecError(path, "evaluation", "crop_size and stride go with mode = \"slide\"")
        return Evaluation()
    window = crop(path, "evaluation.crop_size", require(path, raw, "crop_size"))
    stride = crop(path, "evaluation.stride", require(path, raw, "stride"))
    return Evaluation(mode="slide", crop_size=window, stride=stride)
