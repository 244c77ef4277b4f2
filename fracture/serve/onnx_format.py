"""The names an exported ONNX file and its readers share: format version, opset, input and output names.

Its own module so that the runtime (onnx_backend), the writer (export) and the
cache (onnx_cache) agree without importing each other.
"""
from __future__ import annotations

ONNX_EXPORT_VERSION = 2
OPSET = 17
INPUT_IMAGE = "image"
INPUT_BODY = "body_part"
OUTPUT_PROB = "probability"
OUTPUT_LOGIT = "logit"
OUTPUT_BODY = "body_probability"
OUTPUT_FEATURES = "features"
