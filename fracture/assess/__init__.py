"""Orchestration above train/serve/explain: evaluate a checkpoint on a split (predictions cache, ensemble, localisation, calibration fitting, heatmap selection, model card)."""
