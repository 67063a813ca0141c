"""The detection spec: which streaming mode a model was trained for, and (always-on) its decision settings.

Carried by a bundle's manifest (``detection``, manifest format 2; docs/bundle.md) and read by the agent
(docs/agent.md, "Always-on detection"):

- ``mode = "lanes"``: a per-utterance model, trained on 1 s clips from zero state; the agent serves it with
  staggered lanes that are reset every window, decided by the agent config's ``[detection]`` settings.
- ``mode = "always_on"``: a model trained on long stretches, never reset; the agent runs one network per audio
  stream and decides on the readout's time course: the per-step softmax probabilities of the readout voltage,
  averaged over the last ``smoothing_ms``; a detection when a class other than ``background_label`` reaches
  ``threshold`` and leads every other class (the background included) by ``min_margin``; then nothing for
  ``refractory_ms``. The values are the defaults set on a validation stream (``tuned_on`` says which);
  a deployment may override them in its agent config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from edgekws.packaging._network import SpecError

Mode = Literal["lanes", "always_on"]
MODES: tuple[str, ...] = ("lanes", "always_on")
BACKGROUND_LABEL = "_background_"
SETTINGS = ("smoothing_ms", "threshold", "min_margin", "refractory_ms")


@dataclass(frozen=True)
class DetectionSpec:
    """A model's streaming mode and, for ``always_on``, its decision defaults (module docstring)."""

    TYPE: ClassVar[str] = "edgekws.detection"
    FORMAT_VERSION: ClassVar[int] = 1

    mode: Mode = "always_on"
    background_label: str = BACKGROUND_LABEL
    smoothing_ms: float = 100.0
    threshold: float = 0.5
    min_margin: float = 0.0
    refractory_ms: float = 1000.0
    tuned_on: str = ""  # the validation stream the settings were chosen on (free text)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise SpecError("invalid detection spec: " + "; ".join(problems))

    def problems(self) -> list[str]:
        p = []
        if self.mode not in MODES:
            p.append(f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {self.mode!r}")
        if not isinstance(self.background_label, str) or not self.background_label:
            p.append("background_label must name the readout's background class")
        for key in SETTINGS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                p.append(f"{key} must be a finite number, got {value!r}")
        if not p:
            if self.smoothing_ms < 0 or self.refractory_ms < 0 or self.min_margin < 0:
                p.append("smoothing_ms, refractory_ms and min_margin must be >= 0")
            if not 0 < self.threshold <= 1:
                p.append(f"threshold must lie in (0, 1], got {self.threshold}")
        if not isinstance(self.tuned_on, str) or len(self.tuned_on) > 512:
            p.append("tuned_on must be a string of at most 512 characters")
        return p

    def to_dict(self) -> dict[str, Any]:
        """The manifest's tagged dictionary: ``mode`` alone for ``lanes``, every field for ``always_on``."""
        head = {"type": self.TYPE, "format_version": self.FORMAT_VERSION, "mode": self.mode}
        if self.mode == "lanes":
            return head
        return {
            **head,
            "background_label": self.background_label,
            **{k: float(getattr(self, k)) for k in SETTINGS},
            "tuned_on": self.tuned_on,
        }

    @classmethod
    def from_dict(cls, data: Any) -> DetectionSpec:
        """Rebuild from :meth:`to_dict`; unknown or missing fields are refused (one message lists them)."""
        if not isinstance(data, dict):
            raise SpecError(f"detection must be an object, got {type(data).__name__}")
        if data.get("type") != cls.TYPE:
            raise SpecError(f"not a detection spec: type must be {cls.TYPE!r}, got {data.get('type')!r}")
        if data.get("format_version") != cls.FORMAT_VERSION:
            raise SpecError(
                f"detection format_version must be {cls.FORMAT_VERSION}, got {data.get('format_version')!r}; "
                "upgrade edgekws to read newer bundles"
            )
        mode = data.get("mode")
        expected = {"type", "format_version", "mode"}
        if mode == "always_on":
            expected |= {"background_label", "tuned_on", *SETTINGS}
        elif mode not in MODES:
            modes = ", ".join(repr(m) for m in MODES)
            raise SpecError(f"detection mode must be one of {modes}, got {mode!r}")
        if set(data) != expected:
            raise SpecError(
                f"a {mode} detection spec has exactly the fields {sorted(expected)}; missing "
                f"{sorted(expected - set(data))}, unknown {sorted(set(data) - expected)}"
            )
        fields = {k: v for k, v in data.items() if k not in ("type", "format_version")}
        return cls(**fields)
