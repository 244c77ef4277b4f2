"""Charts: plotly figure builders on pandas/numpy inputs (no streamlit, no torch)."""
from __future__ import annotations

from fracture.viz.charts import *  # noqa: F401,F403 - the public chart API
from fracture.viz.charts import __all__  # noqa: F401
