"""Compare: several checkpoints and their ensemble on one split of the active dataset."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from fracture.checkpoints.compatibility import DATA_NAMES, dataset_kind, describe_mismatch, model_data_kind
from fracture.data.discover import FoundDataset, data_kind, dataset_for_models, fracatlas_root
from fracture.errors import FractureError
from fracture.evaluate import body_part_metric, metrics_table, report_curves
from fracture.evaluate.localisation import localisation_table
from fracture.train.events import read_events, run_status
from fracture.ui import loaders
from fracture.ui.context import active_context, checkpoint_label, require_manifest
from fracture.ui.progress import evaluate_with_progress, prepare_predictions, was_cancelled
from fracture.viz.charts import (
    body_part_auc_chart,
    confusion_matrix_chart,
    metrics_bar_chart,
    overlay_training_curves_chart,
    reliability_chart,
    roc_chart,
)

ENSEMBLE = "ensemble"


def body_part_counts(report: dict, level: str) -> dict[str, str]:
    """``{body part: "n=164 · 50 pos"}`` (the same split for every model)."""
    parts = report[level].get("by_body_part", {})
    return {part: f"n={m['n']} · {m.get('n_pos', '?')} pos" for part, m in parts.items() if "n" in m}


context = active_context()
st.title("📊 Compare")
st.caption(
    "Every number is computed here by the project's own code on the chosen split of the dataset named "
    "below, at each checkpoint's stored threshold (chosen on validation data). Results are cached."
)
if not context.checkpoints:
    st.info("No models to compare yet: train one on the Train page or place checkpoints in weights/.")
    st.stop()
active_manifest = require_manifest(context)

labels = [checkpoint_label(e) for e in context.checkpoints]
by_label = dict(zip(labels, context.checkpoints))
default = [checkpoint_label(context.checkpoint)] if context.checkpoint is not None else labels[:1]
# A selection carried in the URL was made for some dataset: on another one, start from the active model.
dataset_key = str(context.dataset_root)
previous = st.session_state.get("compare-dataset")
fresh_default = [label for label in default if label in labels]
if previous is not None and previous != dataset_key and st.session_state.get("models") not in (None, fresh_default):
    st.session_state["models"] = fresh_default
    st.info("The dataset changed, so the model selection went back to the active model.")
st.session_state["compare-dataset"] = dataset_key
chosen = st.multiselect("Models", labels, default=[label for label in default if label in labels],
                        key="models", bind="query-params",
                        help="Two or more with the same class names add their ensemble (mean of probabilities).")
if not chosen:
    st.info("Pick at least one model.")
    st.stop()

# The data the models are evaluated on: by default the kind they were trained on (FracAtlas models on
# FracAtlas when it is here), else the sidebar's dataset.
active_root = Path(active_manifest.root)
found = [d for d in loaders.found_datasets(tuple(str(r) for r in context.settings.data_roots),
                                           str(context.settings.demo_dir)) if d.path != active_root.resolve()]
fracatlas = fracatlas_root()
if fracatlas is not None and fracatlas != active_root.resolve() and all(d.path != fracatlas for d in found):
    found.append(FoundDataset(fracatlas, "fracatlas"))
kinds = [model_data_kind(by_label[label].meta or {}) for label in chosen]
matching = dataset_for_models(kinds, dataset_kind(active_manifest), found)
roots = {str(active_root): f"{context.dataset_label or active_root.name} (sidebar)",
         **{str(d.path): f"{d.path.name} ({data_kind(d)}) — {d.path}" for d in found}}
data_key = "compare-data-" + "|".join(sorted(chosen))  # a new model selection gets its own default
c1, c2, c3 = st.columns([2, 1, 1])
data_root = c1.selectbox(
    "Evaluate on", list(roots), index=list(roots).index(str(matching.path) if matching else str(active_root)),
    key=data_key, format_func=roots.get,
    help="Defaults to the data the chosen models were trained on when it is here "
         "(FRACTURE_FRACATLAS or ../shared/data/fracatlas for FracAtlas), else the sidebar's dataset.")
if matching is not None and data_root == str(matching.path):
    c1.caption(f"The chosen models were trained on {DATA_NAMES.get(data_kind(matching), data_kind(matching))}, "
               "so they are evaluated on it (the sidebar's dataset is another kind).")
try:
    manifest = active_manifest if data_root == str(active_root) else loaders.load_manifest(data_root)
except FractureError as exc:
    st.error(str(exc))
    st.stop()
splits = [s for s in ("test", "val", "train") if (manifest.frame["split"] == s).any()]
split = c2.selectbox("Split", splits, key="split", bind="query-params",
                     help="Use test for final numbers, val while choosing.")
level = c3.radio("Level", ("image", "study"), key="level", bind="query-params",
                 help="Study level: a study's probability is the mean of its images' probabilities.")
for label in chosen:
    mismatch = describe_mismatch(by_label[label].meta, manifest)
    if mismatch:
        st.warning(f"{label}: {mismatch}")

# An ensemble averages probabilities of the same question: only models with the same class names.
model_classes = {label: tuple((by_label[label].meta or {}).get("class_names") or ()) for label in chosen}
reference = tuple(manifest.class_names) if tuple(manifest.class_names) in model_classes.values() \
    else model_classes[chosen[0]]
members = [label for label in chosen if model_classes[label] == reference]
for label in chosen:
    if label not in members and len(chosen) >= 2:
        st.info(f"{label} is left out of the ensemble: it predicts '{' vs '.join(reversed(model_classes[label]))}', "
                f"the ensemble '{' vs '.join(reversed(reference))}'; averaging them would mix two questions.")

paths = tuple(str(by_label[label].path) for label in chosen)
ensemble_paths = tuple(str(by_label[label].path) for label in members) if len(members) >= 2 else ()
if was_cancelled("compare"):
    st.info("Evaluation cancelled; nothing was saved.")
    st.button("Evaluate again", key="compare-again")
    st.stop()
try:
    signatures = tuple(loaders.path_signature(p) for p in paths)
    prepare_predictions(paths, signatures, data_root, split, manifest.fingerprint())
    results = evaluate_with_progress(paths, signatures, data_root, split, manifest.fingerprint(),
                                     ensemble=ensemble_paths)
except FractureError as exc:
    st.error(str(exc))
    st.stop()

names = {str(by_label[label].path): label for label in chosen}
reports = {names[path]: result.report for path, result in results.items() if path != ENSEMBLE}
if ENSEMBLE in results:
    reports[f"ensemble of {len(ensemble_paths)} (mean)"] = results[ENSEMBLE].report
problems = {p["path"]: p for r in results.values() for p in (r.problems or [])}
if problems:
    with st.expander(f"{len(problems)} image(s) could not be read and were left out"):
        st.dataframe([{"path": p["path"], "reason": p["reason"]} for p in problems.values()])

table = metrics_table(reports, level)
trained_on = {label: Path(str((by_label[label].meta or {}).get("train_config", {}).get("data") or "?")).name
              for label in chosen}
table.insert(0, "trained on", [trained_on.get(str(name), "–") for name in table.index])
st.subheader(f"Metrics — {split} split, {level} level")
st.dataframe(table, column_config={c: st.column_config.NumberColumn(format="%.3f")
                                   for c in table.columns if c not in ("n", "trained on")})

st.plotly_chart(metrics_bar_chart(table, split=split, level=level), key="compare-bars")
curves = report_curves(reports, level, "roc")
if curves:
    st.plotly_chart(roc_chart(curves, split=split, level=level), key="compare-roc")
else:
    st.info("ROC curves need both classes in this split.")
calibrations = {name: r["image"]["calibration"] for name, r in reports.items() if r["image"].get("calibration")}
if calibrations:
    st.plotly_chart(reliability_chart(calibrations, split=split), key="compare-reliability")
    st.caption("Image level, 15 equal-width bins; marker size grows with the images in a bin. Dotted: the "
               "model's scores before temperature scaling. On the diagonal, a probability of 0.8 means 80% "
               "of such images are positive.")

st.subheader("Confusion matrices")
class_names = tuple(manifest.class_names)
columns = st.columns(min(len(reports), 2))  # two to a row: cells wide enough for "1,234 / 81.1%"
for index, (name, report) in enumerate(reports.items()):
    with columns[index % len(columns)]:
        st.plotly_chart(
            confusion_matrix_chart(report[level]["overall"]["confusion"],
                                   f"{name}<br>threshold {report['threshold']:.3f}", class_names=class_names),
            key=f"compare-cm-{index}", config={"displayModeBar": False},
        )

st.plotly_chart(
    body_part_auc_chart({name: body_part_metric(r, level) for name, r in reports.items()},
                        split=split, level=level, counts=body_part_counts(next(iter(reports.values())), level)),
    key="compare-body-parts",
)

localisation = localisation_table(reports)
if not localisation.empty:  # positives with annotated boxes: does the heatmap point at the fracture?
    st.subheader(f"Localisation — {split} split")
    st.dataframe(localisation, column_config={c: st.column_config.NumberColumn(format="%.3f")
                                              for c in localisation.columns if c != "n"})
    with st.expander("Per body part, and how it is measured"):
        st.dataframe(localisation_table(reports, by_body_part=True))
        st.caption(next(r["image"]["localisation"]["method"] for r in reports.values()
                        if (r["image"].get("localisation") or {}).get("n")))

st.subheader("Training curves")
runs = {}
for label in chosen:
    entry = by_label[label]
    run_dir = Path(entry.path).parent
    if entry.source == "run" and read_events(run_dir):
        epochs = run_status(run_dir).epochs_log
        if epochs:
            runs[label] = pd.DataFrame(epochs)
if runs:
    metric = st.selectbox("Metric", ("val_roc_auc", "val_loss", "train_loss", "val_accuracy"),
                          key="compare-curve-metric")
    st.plotly_chart(overlay_training_curves_chart(runs, metric), key="compare-curves")
else:
    st.caption("Training curves are shown for checkpoints that come from runs on this machine.")
