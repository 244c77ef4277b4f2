"""Labels and scores checked before any metric: numpy only, so the calibration maths and the
prediction path never import scikit-learn."""
from __future__ import annotations

from typing import Any

import numpy as np

from fracture.errors import FractureError


class EvaluationError(FractureError, ValueError):
    """Labels or probabilities that cannot be evaluated (or disagree with each other).

    A ``ValueError`` too, so callers that validate inputs the plain-Python way
    catch it; pages catch it as a ``FractureError`` and show it with ``st.error``.
    """


def _as_arrays(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated 1-D int labels in {0, 1} and finite float scores of the same length."""
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1:
        raise EvaluationError(
            f"labels and probabilities must be 1-D; got shapes {y.shape} and {p.shape}"
        )
    if len(y) != len(p):
        raise EvaluationError(
            f"labels and probabilities differ in length: {len(y)} labels, {len(p)} probabilities"
        )
    if len(y) == 0:
        raise EvaluationError("nothing to evaluate: no labels and probabilities were given")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number):
        raise EvaluationError(f"labels must be 0/1 numbers; got dtype {y.dtype}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise EvaluationError(
            f"labels must be 0 or 1; found {np.unique(y[bad])[:5].tolist()} "
            f"({int(bad.sum())} of {len(y)} labels)"
        )
    if not np.isfinite(p).all():
        raise EvaluationError(
            f"probabilities must be finite; {int((~np.isfinite(p)).sum())} of {len(p)} "
            "are NaN or infinite"
        )
    return y.astype(np.int64), p
