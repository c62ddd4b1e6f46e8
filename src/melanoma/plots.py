"""Charts: matplotlib set up for files (no display), one palette, and the check every chart passes
before it is saved (no text outside the picture, no two texts on top of each other).

The palette is Okabe and Ito's, which stays distinct for the common colour-vision deficiencies;
every chart that uses colour to mean something says what in a legend drawn from the same names.
"""

from __future__ import annotations

import io
import warnings
from itertools import combinations
from pathlib import Path
from typing import Any

COLOURS = {
    "baseline": "#7f7f7f",  # the reference bar of an ablation
    "real": "#0072b2",  # a difference that holds over folds
    "not_real": "#9ecae1",  # a difference within the noise
    "kept": "#0072b2",  # an ensemble candidate under both limits
    "over": "#d55e00",  # a candidate over this chart's limit
    "flagged_elsewhere": "#e69f00",  # a candidate over the other chart's limit only
    "before": "#e69f00",
    "after": "#0072b2",
    "reference": "#999999",  # diagonals and limits
}


class ChartLayoutWarning(UserWarning):
    """A chart's text runs off the picture or over another text."""


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _texts(fig: Any) -> list[tuple[str, Any]]:
    """Every visible, non-empty text of the figure with a name for messages."""
    found = [("figure title", t) for t in fig.texts]
    for ax in fig.axes:
        found += [(f"title {t.get_text()!r}", t) for t in (ax.title, ax._left_title, ax._right_title)]
        found += [("x label", ax.xaxis.label), ("y label", ax.yaxis.label)]
        found += [
            (f"x tick {t.get_text()!r}", t) for t in _shown_ticks(ax.get_xticklabels(), ax.get_xlim(), 0)
        ]
        found += [
            (f"y tick {t.get_text()!r}", t) for t in _shown_ticks(ax.get_yticklabels(), ax.get_ylim(), 1)
        ]
        legend = ax.get_legend()
        if legend is not None:
            found += [(f"legend {t.get_text()!r}", t) for t in legend.get_texts()]
    for legend in fig.legends:
        found += [(f"legend {t.get_text()!r}", t) for t in legend.get_texts()]
    return [(name, t) for name, t in found if t.get_visible() and t.get_text().strip()]


def _shown_ticks(labels: list, limits: tuple[float, float], axis: int) -> list:
    """The tick labels matplotlib draws: those inside the axis's view (the others exist, unseen)."""
    low, high = sorted(limits)
    span = (high - low) * 1e-9
    return [t for t in labels if low - span <= t.get_position()[axis] <= high + span]


def text_problems(fig: Any) -> list[str]:
    """What a reader would see go wrong: texts cut by the picture's edge, texts over each other."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    boxes = [(name, t.get_window_extent(renderer)) for name, t in _texts(fig)]
    problems = []
    for name, box in boxes:
        if box.x0 < page.x0 - 1 or box.y0 < page.y0 - 1 or box.x1 > page.x1 + 1 or box.y1 > page.y1 + 1:
            problems.append(f"{name} is cut off at the picture's edge")
    for (a, box_a), (b, box_b) in combinations(boxes, 2):
        if box_a.overlaps(box_b) and _shared_area(box_a, box_b) > 2.0:
            problems.append(f"{a} overlaps {b}")
    return problems


def _shared_area(a: Any, b: Any) -> float:
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def save(fig: Any, target: Path | io.BytesIO, dpi: int = 100) -> None:
    """Check the layout (a ChartLayoutWarning names each problem), write PNG, close the figure."""
    problems = text_problems(fig)
    if problems:
        warnings.warn("chart layout: " + "; ".join(problems[:5]), ChartLayoutWarning, stacklevel=2)
    fig.savefig(target, format="png", dpi=dpi)
    pyplot().close(fig)
