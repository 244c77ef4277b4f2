"""The Reader Study's ROC figure is readable on the app's dark theme and tells 30+ readers apart."""
from __future__ import annotations

from fracture.ui.reader_charts import MARKERS, MODEL_COLOR, READER_COLORS, reader_style, readers_roc


def _luminance(hex_colour: str) -> float:
    r, g, b = (int(hex_colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_every_reader_of_a_large_class_looks_different_and_none_is_black():
    styles = [reader_style(i) for i in range(len(READER_COLORS) * len(MARKERS))]
    assert len(set(styles)) == len(styles) == 77
    assert all(_luminance(colour) > 0.15 for colour, _ in styles)  # black vanished on the dark background
    assert _luminance(MODEL_COLOR) > 0.5


def test_the_figure_draws_the_model_and_each_reader():
    model = {"roc": [(0.0, 0.0), (0.2, 0.8), (1.0, 1.0)], "auc": 0.9, "roc_point": (0.2, 0.8)}
    fig = readers_roc(model, [("Ada", 0.1, 0.7), ("Bob", 0.4, 0.9)], "Readers (ABC123)")
    names = [trace.name for trace in fig.data]
    assert names == ["model (AUC 0.900)", "model at its threshold", "chance", "Ada", "Bob"]
    assert fig.data[3].marker.color != fig.data[4].marker.color and fig.layout.font.size >= 15
