"""Fracture Lab core: data, preprocessing, models, training, evaluation, explanation.

The public API is re-exported lazily so that ``import fracture`` stays cheap
(the data layer does not pull in torch).
"""
from __future__ import annotations

__version__ = "0.1.0"
