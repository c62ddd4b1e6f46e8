"""The results a run holds, as types: calibration, operating points, subgroups.

Each is a small dataclass that reads and writes its own JSON file in the run directory (through
rundir, stamped with the state of the trained folds it was computed from, so that a result of
folds trained since is not shown as theirs), and says itself in one table and one sentence, which
the terminal, the HTML report and the model card all show. The commands that compute them live in
evaluation/ (calibration.py, operating_points.py, subgroups.py); everything that reads a run's
result reads it here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from melanoma import rundir
from melanoma.metrics import interval_text
from melanoma.targets import positive_words


class Saved:
    """A result kept in one JSON file of the run (FILE), stamped with the trained folds' state."""

    FILE: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, run: Path) -> Path:
        return rundir.save_result(run, self.FILE, self.to_json())

    @classmethod
    def load(cls, run: Path) -> Any:
        """The run's result for its folds as they are now; None when there is none (or it is of
        folds trained since); a file that is not this result is one clear error."""
        found = rundir.current_result(run, cls.FILE)
        if found is None:
            return None
        try:
            return cls.from_json(found)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{Path(run) / cls.FILE}: not a {cls.__name__} result ({err}); run its command again"
            ) from err

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Scores:
    """How well probabilities are calibrated: ECE (equal-mass bins), Brier score, log loss."""

    ece: float
    brier: float
    log_loss: float


@dataclass(frozen=True)
class Calibration(Saved):
    """Temperature scaling of the positive class's probability, fitted on out-of-fold rows."""

    FILE: ClassVar[str] = rundir.CALIBRATION
    temperature: float
    fitted_on: str  # the out-of-fold file
    rows: int
    positives: int  # melanomas (ISIC 2024: malignant lesions) among the rows
    bins: int
    before: Scores
    after: Scores

    def to_json(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "fitted_on": self.fitted_on, "rows": self.rows,
                "melanomas": self.positives, "bins": self.bins, "before": asdict(self.before),
                "after": asdict(self.after)}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        return cls(float(d["temperature"]), d["fitted_on"], int(d["rows"]), int(d["melanomas"]), int(d["bins"]),
                   Scores(**d["before"]), Scores(**d["after"]))  # fmt: skip

    def table(self) -> pd.DataFrame:
        """ECE, Brier score and log loss before and after."""
        return pd.DataFrame([{"": "before", **asdict(self.before)}, {"": "after", **asdict(self.after)}])

    def summary(self) -> str:
        return (f"temperature {self.temperature:.3f}, fitted on {self.rows} out-of-fold rows ({self.fitted_on}); "
                f"ECE over {self.bins} equal-mass bins")  # fmt: skip


MEASURES = ("threshold", "sensitivity", "specificity", "ppv", "npv", "biopsies_per_melanoma")


@dataclass(frozen=True)
class OperatingPoint:
    """What the model does when every score at or above `threshold` is flagged, with a bootstrap
    95% interval per measure (`intervals[measure] = (low, high)`)."""

    target_sensitivity: float
    threshold: float
    sensitivity: float
    specificity: float
    ppv: float
    npv: float
    biopsies_per_melanoma: float
    tp: int
    fp: int
    tn: int
    fn: int
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    threshold_calibrated: float | None = None  # the same threshold on the calibrated scale

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("intervals", "threshold_calibrated")}
        for measure, (low, high) in self.intervals.items():
            out[f"{measure}_low"], out[f"{measure}_high"] = low, high
        if self.threshold_calibrated is not None:
            out["threshold_calibrated"] = self.threshold_calibrated
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OperatingPoint:
        intervals = {m: (d[f"{m}_low"], d[f"{m}_high"]) for m in MEASURES if f"{m}_low" in d}
        counts = {k: int(d[k]) for k in ("tp", "fp", "tn", "fn")}
        return cls(d["target_sensitivity"], *(d[m] for m in MEASURES), **counts, intervals=intervals,
                   threshold_calibrated=d.get("threshold_calibrated"))  # fmt: skip

    def text(self, measure: str, digits: int = 3) -> str:
        """'value (low-high)' for people."""
        low, high = self.intervals.get(measure, (float("nan"), float("nan")))
        return interval_text({measure: getattr(self, measure), f"{measure}_low": low, f"{measure}_high": high},
                             measure, digits)  # fmt: skip


@dataclass(frozen=True)
class OperatingPoints(Saved):
    """Thresholds at wanted sensitivities, found on out-of-fold rows (PPV, NPV and biopsies per
    finding hold at their prevalence only)."""

    FILE: ClassVar[str] = rundir.OPERATING_POINTS
    fitted_on: str
    rows: int
    positives: int
    prevalence: float
    bootstrap: dict[str, Any]
    points: list[OperatingPoint]

    def to_json(self) -> dict[str, Any]:
        return {"fitted_on": self.fitted_on, "rows": self.rows, "melanomas": self.positives,
                "prevalence": self.prevalence, "bootstrap": self.bootstrap,
                "points": [p.to_json() for p in self.points]}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OperatingPoints:
        return cls(d["fitted_on"], int(d["rows"]), int(d["melanomas"]), float(d["prevalence"]), d["bootstrap"],
                   [OperatingPoint.from_json(p) for p in d["points"]])  # fmt: skip

    def at(self, sensitivity: float) -> OperatingPoint | None:
        """The point fitted for this wanted sensitivity, if there is one."""
        return next((p for p in self.points if abs(p.target_sensitivity - sensitivity) < 1e-9), None)

    def table(self, scheme: str = "9c") -> pd.DataFrame:
        """One row per point of "value (low-high)" texts."""
        per = f"biopsies per {positive_words(scheme)[0]}" + (" lesion" if scheme == "mb" else "")
        return pd.DataFrame(
            [{"sensitivity wanted": f"{p.target_sensitivity:.0%}", "threshold": p.text("threshold", 4),
              "sensitivity": p.text("sensitivity"), "specificity": p.text("specificity"), "PPV": p.text("ppv"),
              "NPV": p.text("npv"), per: p.text("biopsies_per_melanoma", 1)} for p in self.points]
        )  # fmt: skip

    def summary(self, scheme: str = "9c") -> str:
        word, plural = positive_words(scheme)
        return (f"{self.rows} out-of-fold rows with {self.positives} {plural} ({self.prevalence:.1%}); 95% "
                f"bootstrap intervals; PPV, NPV and biopsies per {word} found hold at this prevalence only")  # fmt: skip


@dataclass(frozen=True)
class Subgroups(Saved):
    """AUC and sensitivity at one operating point per subgroup of the out-of-fold rows."""

    FILE: ClassVar[str] = rundir.SUBGROUPS
    fitted_on: str
    sensitivity: float
    threshold: float
    min_each: int
    bootstrap: dict[str, Any]
    groups: list[dict[str, Any]]  # one per group: column, group, images, melanomas, auc (+ interval), status

    def to_json(self) -> dict[str, Any]:
        return {"fitted_on": self.fitted_on, "sensitivity": self.sensitivity, "threshold": self.threshold,
                "min_each": self.min_each, "bootstrap": self.bootstrap, "groups": self.groups}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Subgroups:
        return cls(d["fitted_on"], float(d["sensitivity"]), float(d["threshold"]), int(d["min_each"]),
                   d["bootstrap"], list(d["groups"]))  # fmt: skip

    def flagged(self) -> list[str]:
        """The groups whose AUC interval lies wholly below the overall AUC, as "column = group"."""
        return [f"{g['column']} = {g['group']}" for g in self.groups if g["status"] == "below overall"]

    def table(self, scheme: str = "9c") -> pd.DataFrame:
        """One row per group of "value (low-high)" texts."""
        sensitivity = f"sensitivity at {self.sensitivity:.0%} (95%)"
        plural = positive_words(scheme)[1]
        return pd.DataFrame(
            [{"column": g["column"], "group": str(g["group"]), "images": g["images"], plural: g["melanomas"],
              "AUC (95%)": interval_text(g, "auc"), sensitivity: interval_text(g, "sensitivity"),
              "note": "" if g["status"] == "ok" else g["status"]} for g in self.groups]
        )  # fmt: skip

    def summary(self) -> str:
        return (f"threshold {self.threshold:.4f} (found on all rows); flagged (interval wholly below the overall "
                f"AUC): {', '.join(self.flagged()) or 'none'}")  # fmt: skip
