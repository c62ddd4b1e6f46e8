"""The results a run holds, as types: evaluations, calibration, operating points, subgroups, the
explanation gallery.

Each is a small dataclass that reads and writes its own JSON file in the run directory (through
rundir, stamped with the state of the trained folds it was computed from, so that a result of
folds trained since is not shown as theirs), and says itself in one table and one sentence, which
the terminal, the HTML report and the model card all show. The commands that compute them live in
evaluation/ (evaluate.py, calibration.py, operating_points.py, subgroups.py, explain.py); a
run's results are read through run.Run, which reads them here.
"""

from __future__ import annotations

from dataclasses import MISSING as MISSING_FIELD
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from melanoma import rundir
from melanoma.metrics import interval_text
from melanoma.targets import positive_words

MISSING = "Not computed yet"  # what the report and the card say where a run lacks a result


def make_command(kind: type, run: Path) -> str:
    """The command that computes a result of this type for the run."""
    return kind.MAKE.format(run=run)


class Saved:
    """A result kept in one JSON file of the run (FILE), stamped with the trained folds' state;
    shown everywhere as summary(scheme), one sentence, and table(scheme), a table of texts; MAKE
    is the command that computes it."""

    FILE: ClassVar[str]
    MAKE: ClassVar[str]

    def summary(self, scheme: str = "9c") -> str:
        raise NotImplementedError

    def table(self, scheme: str = "9c") -> pd.DataFrame:
        raise NotImplementedError

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
class Evaluation:
    """Out-of-fold AUC (raw and ranked within folds) and partial AUC with bootstrap intervals, of one
    checkpoint with or without TTA (RUN/evaluation_<checkpoint>[_tta].json, by `melanoma evaluate`)."""

    MAKE: ClassVar[str] = "melanoma evaluate {run} --data DATA"
    checkpoint: str
    tta: bool
    bootstrap: dict[str, Any]
    scores: list[dict[str, Any]]  # one per (metric, rows): value, low, high, images, melanomas
    folds: list[dict[str, Any]]  # one per fold: fold, images, auc, auc_20
    data_identity: dict[str, Any] | None  # rundir.data_identity of the run's data
    unfinished_folds: list[int]  # folds used although their training stopped early
    oof_file: str  # the out-of-fold file scored
    file: str  # this result's JSON file
    run: str
    # Runs of more than two classes: the ISIC 2019 metric (classes, balanced_accuracy, low, high,
    # images, undecided) and the confusion matrix (rows: true class, columns: predicted).
    multiclass: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Evaluation:
        identity = d.get("data_identity", d.get("data"))  # saved before the rename: "data"
        return cls(d["checkpoint"], bool(d["tta"]), d["bootstrap"], list(d["scores"]), list(d["folds"]), identity,
                   list(d.get("unfinished_folds", [])), d["oof_file"], d["file"], d["run"],
                   d.get("multiclass"))  # fmt: skip

    @classmethod
    def load_all(cls, run: Path) -> list[Evaluation]:
        """Every evaluation saved in the run for its folds as they are now, by file name."""
        found = []
        for d in rundir.evaluations(run):
            try:
                found.append(cls.from_json(d))
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(
                    f"{d.get('file', run)}: not an evaluation ({err}); run evaluate again"
                ) from err
        return found

    def value(self, metric: str = "auc", rows: str = "all") -> float:
        """One score's value (nan when it was not computed)."""
        return next((float(s["value"]) for s in self.scores if (s["metric"], s["rows"]) == (metric, rows)),
                    float("nan"))  # fmt: skip

    def title(self) -> str:
        return f"{self.checkpoint}, {'8-way TTA' if self.tta else 'no TTA'}"

    def table(self, scheme: str = "9c") -> pd.DataFrame:
        """One row per (metric, rows): value, 95% interval, images and positives."""
        columns = ["metric", "rows", "value", "low", "high", "images", "melanomas"]
        frame = pd.DataFrame(self.scores)[columns]
        return frame.rename(columns={"melanomas": positive_words(scheme)[1]})

    def multiclass_text(self) -> str | None:
        """The balanced multi-class accuracy in one sentence (None for a run of two classes)."""
        m = self.multiclass
        if not m:
            return None
        undecided = (
            f"; {m['undecided']} undecided (a tied top probability), counted wrong" if m["undecided"] else ""
        )
        return (
            f"Balanced multi-class accuracy (the ISIC 2019 challenge's metric, mean recall over the "
            f"{len(m['classes'])} classes): {m['balanced_accuracy']:.4f} (95% {m['low']:.4f}-{m['high']:.4f}), "
            f"{m['images']} images{undecided}."
        )

    def confusion_table(self) -> pd.DataFrame | None:
        """The confusion matrix: one row per true class, one column per predicted class (None for a
        run of two classes)."""
        m = self.multiclass
        if not m:
            return None
        frame = pd.DataFrame(m["confusion"], columns=m["classes"])
        frame.insert(0, "true \\ predicted", m["classes"])
        return frame

    def per_fold_text(self) -> str:
        """Each fold's AUC (and AUC_20 where ISIC 2019 rows make it another figure), on one line."""
        if any(s["rows"] == "2020" for s in self.scores):
            return "AUC / AUC_20 per fold: " + "  ".join(
                f"fold {f['fold']}: {f['auc']:.4f} / {f['auc_20']:.4f}" for f in self.folds
            )
        return "AUC per fold: " + "  ".join(f"fold {f['fold']}: {f['auc']:.4f}" for f in self.folds)


@dataclass(frozen=True)
class Gallery:
    """Grad-CAM overlays of the most confident misses and false alarms among the out-of-fold rows
    (RUN/explain/gallery.csv and its PNGs, by `melanoma explain --data`)."""

    FILE: ClassVar[str] = f"{rundir.EXPLAIN}/gallery.csv"
    MAKE: ClassVar[str] = "melanoma explain {run} --data DATA --gallery 4"
    items: pd.DataFrame  # kind, image_name, fold, target, score, file (relative to the run)

    @classmethod
    def load(cls, run: Path) -> Gallery | None:
        path = Path(run) / cls.FILE
        if not path.is_file():
            return None
        items = pd.read_csv(path)
        missing = {"kind", "image_name", "fold", "score", "file"} - set(items.columns)
        if missing:
            raise ValueError(
                f"{path}: not a gallery (no column {', '.join(sorted(missing))}); run explain again"
            )
        return cls(items)

    def table(self, scheme: str = "9c") -> pd.DataFrame:
        """kind, image, fold and score of each overlay."""
        shown = self.items[["kind", "image_name", "fold", "score"]]
        return shown.rename(columns={"score": f"{positive_words(scheme)[0]} score"}).round(4)

    def captions(self, scheme: str = "9c") -> list[tuple[str, str]]:
        """(caption, file relative to the run) per overlay."""
        word = positive_words(scheme)[0]
        return [(f"{g.kind}: {g.image_name} (fold {g.fold}), {word} score {g.score:.3f}", g.file)
                for g in self.items.itertuples(index=False)]  # fmt: skip

    def summary(self, scheme: str = "9c") -> str:
        return (f"Grad-CAM of the {positive_words(scheme)[0]} score by the model that held each image out, "
                "averaged over the 8 orientations; left the image, right the heatmap")  # fmt: skip


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
    MAKE: ClassVar[str] = "melanoma calibrate {run}"
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

    def table(self, scheme: str = "9c") -> pd.DataFrame:
        """ECE, Brier score and log loss before and after (the same for every scheme)."""
        return pd.DataFrame([{"": "before", **asdict(self.before)}, {"": "after", **asdict(self.after)}])

    def summary(self, scheme: str = "9c") -> str:
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
    MAKE: ClassVar[str] = "melanoma operating-points {run}"
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
    MAKE: ClassVar[str] = "melanoma subgroups {run} --data DATA"
    fitted_on: str
    sensitivity: float
    threshold: float
    min_each: int
    bootstrap: dict[str, Any]
    groups: list[dict[str, Any]]  # one per group: column, group, images, melanomas, auc (+ interval), status
    # Per column with two or more scored groups: the equity gap, largest minus smallest AUC and
    # sensitivity across them (column, groups, highest, lowest, auc_gap, sensitivity_gap + intervals).
    gaps: list[dict[str, Any]] = field(default_factory=list)
    estimated: dict[str, str] = field(default_factory=dict)  # column -> how its groups were estimated

    def to_json(self) -> dict[str, Any]:
        return {"fitted_on": self.fitted_on, "sensitivity": self.sensitivity, "threshold": self.threshold,
                "min_each": self.min_each, "bootstrap": self.bootstrap, "groups": self.groups, "gaps": self.gaps,
                "estimated": self.estimated}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Subgroups:
        return cls(d["fitted_on"], float(d["sensitivity"]), float(d["threshold"]), int(d["min_each"]),
                   d["bootstrap"], list(d["groups"]), list(d.get("gaps", [])), dict(d.get("estimated", {})))  # fmt: skip

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

    def gap_table(self) -> pd.DataFrame:
        """One row per column with two or more scored groups: its equity gaps with 95% intervals."""
        sensitivity = f"sensitivity gap at {self.sensitivity:.0%} (95%)"
        return pd.DataFrame(
            [{"column": g["column"], "groups scored": len(g["groups"]), "highest AUC": g["highest"],
              "lowest AUC": g["lowest"], "AUC gap (95%)": interval_text(g, "auc_gap"),
              sensitivity: interval_text(g, "sensitivity_gap")} for g in self.gaps],
            columns=["column", "groups scored", "highest AUC", "lowest AUC", "AUC gap (95%)", sensitivity],
        )  # fmt: skip

    def summary(self, scheme: str = "9c") -> str:
        estimated = "".join(f"; {column}: {how}" for column, how in self.estimated.items())
        found = "frozen out of fold" if self.fitted_on.startswith("validation") else "found on all rows"
        return (f"threshold {self.threshold:.4f} ({found}); flagged (interval wholly below the overall "
                f"AUC): {', '.join(self.flagged()) or 'none'}{estimated}")  # fmt: skip


@dataclass(frozen=True)
class External:
    """A run scored on labelled data it did not train on, at the thresholds and temperature fixed
    out of fold (RUN/validation_<name>.json, by `melanoma validate`; evaluation/validate.py)."""

    MAKE: ClassVar[str] = "melanoma validate {run} --data EXTERNAL --name NAME"
    name: str
    data: str
    checkpoint: str
    tta: bool
    images: int
    positives: int
    overlap: dict[str, Any]  # by_name, by_content, content_checked_against, left_out, note
    bootstrap: dict[str, Any]
    auc: dict[str, float]  # value, low, high
    pauc_80: dict[str, float]
    oof: dict[str, Any]  # file, auc, pauc_80 out of fold
    thresholds_from: str
    points: list[
        dict[str, Any]
    ]  # per frozen threshold: measures, intervals, flagged, single-fold sensitivity
    calibration: dict[str, Any] | None
    subgroups: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    estimated: dict[str, str]
    file: str
    input_checks: dict[str, Any] = field(
        default_factory=dict
    )  # images, flagged, quality, ood, flagged_images
    min_each: int = 5  # the subgroups' smallest scored group (subgroups.MIN_EACH)

    @staticmethod
    def save(run: Path, name: str, result: dict[str, Any]) -> Path:
        return rundir.save_result(run, rundir.validation_file(name), result)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> External:
        required = [
            f.name for f in fields(cls) if f.default is MISSING_FIELD and f.default_factory is MISSING_FIELD
        ]
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d or f.name in required})

    @classmethod
    def load_all(cls, run: Path) -> list[External]:
        """Every validation saved in the run for its folds as they are now, by name."""
        found = []
        for d in rundir.validations(run):
            try:
                found.append(cls.from_json(d))
            except (KeyError, TypeError) as err:
                raise ValueError(
                    f"{d.get('file', run)}: not a validation ({err}); run validate again"
                ) from err
        return found

    def flagged(self) -> list[str]:
        """The frozen points whose external sensitivity interval lies wholly below their target."""
        return [f"{p['target_sensitivity']:.0%} point" for p in self.points if p["flagged"]]

    def summary(self, scheme: str = "9c") -> str:
        plural = positive_words(scheme)[1]
        left = self.overlap.get("left_out") or []
        checked = (
            self.overlap.get("note")
            or f"by name and content against {self.overlap.get('content_checked_against')}"
        )
        return (
            f"{self.name} ({self.data}): {self.images} images, {self.positives} {plural}; AUC "
            f"{interval_text({'auc': self.auc['value'], 'auc_low': self.auc['low'], 'auc_high': self.auc['high']}, 'auc')}"
            f" against {self.oof['auc']:.3f} out of fold; thresholds frozen from the {self.thresholds_from}; "
            f"flagged: {', '.join(self.flagged()) or 'none'}; {len(left)} training image(s) left out ({checked})"
            + self.checks_text()
        )

    def checks_text(self) -> str:
        """What the input checks flagged, as a clause ('' when they did not run)."""
        c = self.input_checks
        if not c:
            return ""
        ood = (
            "no OOD reference (melanoma ood)"
            if c["ood"] is None
            else f"{c['ood']} unlike the training images"
        )
        return f"; input checks flagged {c['flagged']} of {c['images']} ({c['quality']} for quality, {ood})"

    def table(self, scheme: str = "9c") -> pd.DataFrame:
        """AUC and pAUC, then per frozen point: sensitivity, specificity, PPV, NPV ("value (low-high)")."""

        def text(value: float, low: float, high: float) -> str:
            return interval_text({"v": value, "v_low": low, "v_high": high}, "v")

        rows = [{"measure": "AUC", "external (95%)": text(self.auc["value"], self.auc["low"], self.auc["high"]),
                 "out of fold": f"{self.oof['auc']:.3f}", "note": ""},
                {"measure": "pAUC above 80% sensitivity", "out of fold": f"{self.oof['pauc_80']:.3f}", "note": "",
                 "external (95%)": text(self.pauc_80["value"], self.pauc_80["low"], self.pauc_80["high"])}]  # fmt: skip
        for p in self.points:
            for m in ("sensitivity", "specificity", "ppv", "npv"):
                note = ""
                if m == "sensitivity":
                    low, high = p["single_fold_range"]
                    note = (f"one fold model alone: {p['single_fold_sensitivity']:.3f} ({low:.3f}-{high:.3f})"
                            + ("; FLAGGED: wholly below the target" if p["flagged"] else ""))  # fmt: skip
                rows.append({"measure": f"{m} at the {p['target_sensitivity']:.0%} point (t={p['threshold']:.4f})",
                             "external (95%)": text(p[m], p[f"{m}_low"], p[f"{m}_high"]), "out of fold": "",
                             "note": note})  # fmt: skip
        if self.calibration:
            c = self.calibration
            rows.append({"measure": "ECE with the run's temperature", "external (95%)": f"{c['after']['ece']:.4f}",
                         "out of fold": f"{c['oof_after']['ece']:.4f}",
                         "note": f"drift {c['ece_drift']:+.4f}; before: {c['before']['ece']:.4f}"})  # fmt: skip
            rows.append({"measure": "Brier with the run's temperature", "external (95%)": f"{c['after']['brier']:.4f}",
                         "out of fold": f"{c['oof_after']['brier']:.4f}", "note": f"before: {c['before']['brier']:.4f}"})  # fmt: skip
        return pd.DataFrame(rows, columns=["measure", "external (95%)", "out of fold", "note"])

    def groups(self) -> Subgroups:
        """The subgroups of the external images at the frozen 95% threshold."""
        point = next((p for p in self.points if p["target_sensitivity"] >= 0.95), self.points[-1])
        return Subgroups(f"validation {self.name}", point["target_sensitivity"], point["threshold"], self.min_each,
                         self.bootstrap, self.subgroups, self.gaps, self.estimated)  # fmt: skip
