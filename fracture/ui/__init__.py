"""Streamlit support for the app: the only part of ``fracture`` that imports streamlit.

Pages in ``pages/`` stay thin and call into these modules:

- :mod:`fracture.ui.context` builds the sidebar shared by every page (active
  dataset and model) and hands pages an :class:`~fracture.ui.context.ActiveContext`.
- :mod:`fracture.ui.loaders` holds the cached loaders (dataset scans, statistics,
  predictors, evaluations) so that re-opening a page is instant.
- :mod:`fracture.ui.demo` generates the built-in demo dataset once per machine.
- :mod:`fracture.ui.uploads` turns uploaded files into images in memory.
- :mod:`fracture.ui.widgets` holds shared widgets (preprocessing sliders,
  galleries, the model card).
- :mod:`fracture.ui.job_viewer` is the self-refreshing view of a training run.
"""
