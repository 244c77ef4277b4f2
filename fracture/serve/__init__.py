"""Serving: from a checkpoint to what we tell a person (inference, backends, predictor, batch, ONNX export)."""
