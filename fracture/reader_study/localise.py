"""A reader's click scored with the model's pointing game, so "you vs the model" is one rule.

The model's heatmap scores a hit when its maximum lies in the fracture box
grown by 5% of the image's sides (:func:`fracture.evaluate.localisation.score_heatmap`).
A reader's click is turned into a heatmap whose only maximum is the clicked
point, on the same letterboxed square, and handed to that same function: the
margin, the letterbox geometry and the pixel rule are the model's, not a copy.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from fracture.data.boxes import boxes_to_input
from fracture.evaluate.localisation import ImageLocalisation, score_heatmap
from fracture.reader_study.session import Answer, Case, Mark

GRID = 512
"""Side of the square the click is placed on (finer than any model input, so the box edges are sharp)."""


@lru_cache(maxsize=4096)
def _score_point(x: float, y: float, boxes: tuple, height: int, width: int) -> ImageLocalisation:
    (px, py, _, _), = boxes_to_input([(x, y, x, y)], (height, width), GRID, "letterbox")
    heatmap = np.zeros((GRID, GRID), dtype=np.float32)
    heatmap[min(int(py * GRID), GRID - 1), min(int(px * GRID), GRID - 1)] = 1.0
    return score_heatmap(heatmap, boxes, (height, width), resize_mode="letterbox")


def score_mark(mark: Mark, boxes: Sequence[Sequence[float]], original_hw: tuple[int, int]) -> ImageLocalisation:
    """The pointing game for one click: ``hit`` when it lies in a box grown by the model's margin.

    Args:
        mark: the click, normalised to the image it was made on.
        boxes: that image's fracture boxes ``(x0, y0, x1, y1)``, normalised.
        original_hw: that image's (height, width).

    Raises:
        ValueError: no boxes (a case without a box is not scored).
    """
    key = tuple(tuple(float(v) for v in box) for box in boxes)
    return _score_point(float(mark.x), float(mark.y), key, int(original_hw[0]), int(original_hw[1]))


def mark_hit(case: Case, answer: Answer) -> bool | None:
    """Did the reader point at the fracture? None when the case has no box to point at (or no size);
    a fractured case with a box and no click is a miss, as the model's heatmap always points somewhere."""
    if not case.has_box or not case.sizes:
        return None
    mark = answer.mark
    if mark is None or mark.image >= len(case.paths) or not case.boxes[mark.image]:
        return False
    return bool(score_mark(mark, case.boxes[mark.image], case.sizes[mark.image]).hit)


def localisation_summary(cases: Sequence[Case], answers: dict[str, Answer]) -> dict[str, Any]:
    """Reader against model on the fractured, boxed cases the reader answered.

    Returns:
        ``cases`` (scored), ``marked`` (cases with a click), ``hits``, ``rate``; ``model_cases``,
        ``model_hits``, ``model_rate`` on the same cases (where the session has the model's hits).
    """
    scored = [(c, answers[c.case_id]) for c in cases if c.case_id in answers and c.has_box and c.sizes]
    hits = [mark_hit(c, a) for c, a in scored]
    model = [c.model_hit for c, _ in scored if c.model_hit is not None]
    n = len(scored)
    return {
        "cases": n,
        "marked": sum(1 for _, a in scored if a.mark is not None),
        "hits": int(sum(bool(h) for h in hits)),
        "rate": float(np.mean(hits)) if n else None,
        "model_cases": len(model),
        "model_hits": int(sum(model)),
        "model_rate": float(np.mean(model)) if model else None,
    }
