"""Model cards rendered from a checkpoint's metadata alone.

Every number on a card comes from the checkpoint's ``metrics`` (written by
``python -m fracture evaluate --write-meta``), never typed by hand, so a test
can re-render the card and compare it with the file in ``weights/``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fracture.errors import CheckpointError
from fracture.evaluate.report import format_report_markdown

DATASET_NOTES = {
    "fracatlas": (
        "FracAtlas — Abedeen, I., Rahman, M. A., Prottyasha, F. Z., Ahmed, T., Chowdhury, T. M. & "
        "Shatabda, S. \"FracAtlas: A Dataset for Fracture Classification, Localization and Segmentation "
        "of Musculoskeletal Radiographs.\" *Scientific Data* 10, 521 (2023), "
        "https://doi.org/10.1038/s41597-023-02432-4. Licence: CC BY 4.0. Used here: a downscaled copy "
        "(longest side ≤ 512 px, 3,445 images; truncated files and a held-out sample removed — see its "
        "ATTRIBUTION.md)."
    ),
    "mura": "MURA-v1.1 (Rajpurkar et al., 2017), Stanford ML Group research-use licence.",
    "demo": "The built-in synthetic demo dataset (procedurally drawn; not real anatomy).",
    "folders": "A class-folder dataset supplied by the user.",
}

LIMITS = [
    "Not a medical device. It is a teaching and research model; it must not be used to diagnose or treat anyone.",
    "FracAtlas is mostly legs and hands (hip and shoulder images are few), from a small number of hospitals in "
    "Bangladesh; expect worse results on other populations, scanners and body regions.",
    "FracAtlas labels fractures only. MURA's 'abnormal' (which also covers hardware, arthritis and other findings) "
    "is a different question; do not read this model's probability as MURA abnormality.",
    "82% of FracAtlas images are 'not fractured': accuracy alone says little, read sensitivity, specificity and ROC AUC.",
    "FracAtlas has no patient ids: splits are by image, with known duplicate pictures kept on one side, so images of "
    "one patient may still appear in train and test and the test figures may be optimistic.",
    "The Grad-CAM map shows where the network's evidence is, not where the fracture is.",
    "It must not be used on anything but projection radiographs of the body parts it was trained on: CT, MR, "
    "ultrasound and nuclear-medicine images, photos and screen shots are refused where it can tell (see "
    "'What is this image?'), but the check is not perfect, and a refusal is no statement about the patient.",
]


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_model_card(meta: dict[str, Any], *, checkpoint_name: str) -> str:
    """Markdown card for one checkpoint, from its metadata only.

    Raises:
        CheckpointError: the metadata holds no test metrics yet.
    """
    metrics = meta.get("metrics") or {}
    test = metrics.get("test")
    if not test or "image" not in test:
        raise CheckpointError(
            f"{checkpoint_name}: no test metrics in the metadata; run `python -m fracture evaluate "
            f"--checkpoint weights/{checkpoint_name} --data DATA --split test --write-meta` first"
        )
    cfg = meta.get("train_config") or {}
    layout = meta.get("dataset_layout", "")
    overall = test["image"]["overall"]
    low, high = (overall.get("roc_auc_ci") or [None, None])[:2]
    lines = [
        f"# Model card: `{checkpoint_name}`",
        "",
        f"{meta['architecture']} ({meta['in_chans']}-channel input, {meta['image_size']} px, "
        f"{'multi-task with body part' if meta.get('multitask') else 'fracture head only'}) predicting "
        f"**{meta['class_names'][1]}** vs {meta['class_names'][0]}.",
        "",
        f"**Test ROC AUC (image level): {_fmt(overall.get('roc_auc'))} "
        f"(95% CI {_fmt(low)}–{_fmt(high)})**, at threshold {test['threshold']:.3f}: "
        f"sensitivity {_fmt(overall.get('recall'))}, specificity {_fmt(overall.get('specificity'))}.",
        "",
        "## Data",
        "",
        DATASET_NOTES.get(layout, f"Dataset layout: {layout}."),
        "",
        f"Dataset fingerprint (relative paths, labels, splits): `{meta.get('dataset_fingerprint', 'n/a')}`.",
        "",
        "| split | images | positives | studies |",
        "| --- | --- | --- | --- |",
    ]
    for name, sizes in (meta.get("split_sizes") or {}).items():
        lines.append(f"| {name} | {sizes['images']} | {sizes['positives']} | {sizes['studies']} |")
    lines += [
        "",
        "## Training recipe",
        "",
        f"Mode `{cfg.get('mode')}`, pretrained ImageNet weights: {cfg.get('pretrained')}, {cfg.get('epochs')} epochs "
        f"({_chosen_by(cfg)}: {_best_epoch(meta, cfg)}), batch {cfg.get('batch_size')}, "
        f"{cfg.get('optimizer')} lr {cfg.get('lr')}, scheduler {cfg.get('scheduler')}, balancing "
        f"{cfg.get('balancing')}, flip TTA: {meta.get('tta_hflip')}. Augmentation (train split only): "
        f"`{json.dumps(cfg.get('augment'), sort_keys=True)}`. Decision threshold: {meta.get('threshold_rule')} "
        "on the validation split."
        + _training_extras(cfg, meta),
        "",
        f"Preprocessing stored in the checkpoint: `{json.dumps(meta['preprocess'])}`; normalisation "
        f"`{json.dumps(meta['normalization'])}`.",
        "",
        "## Results",
        "",
        format_report_markdown(test, f"Test split ({layout})").rstrip(),
        "",
    ]
    val = metrics.get("val")
    if val and "image" in val:
        v = val["image"]["overall"]
        lines += [
            f"Validation split (used for checkpoint and threshold choice, so optimistic): image ROC AUC "
            f"{_fmt(v.get('roc_auc'))}.",
            "",
        ]
    lines += calibration_card_lines(meta, test)
    from fracture.evaluate.localisation import localisation_card_lines

    lines += localisation_card_lines(meta)
    lines += gate_card_lines(meta)
    lines += shortcut_card_lines(meta)
    command = test.get("command") or (
        f"python -m fracture evaluate --checkpoint weights/{checkpoint_name} --data DATA --split test"
    )
    lines += attempts_card_lines(meta)
    lines += [
        "## Reproduce",
        "",
        "The numbers above:",
        "",
        "```",
        command,
        "```",
        "",
        "The training run:",
        "",
        "```",
        _reproduce_training(cfg),
        "```",
        "",
        "## Known limits",
        "",
    ]
    lines += [f"- {item}" for item in LIMITS]
    lines.append("")
    return "\n".join(lines)


def write_model_card(checkpoint: str | Path, result: Any, out: str | Path, *, data_root: str | None = None) -> Path:
    """Render the card of ``checkpoint`` (its metadata must already hold test metrics) to ``out``."""
    from fracture.checkpoints.format import read_checkpoint_meta

    checkpoint = Path(checkpoint)
    meta = read_checkpoint_meta(checkpoint)
    text = render_model_card(meta, checkpoint_name=checkpoint.name)
    out = Path(out)
    out.write_text(text)
    return out


def _best_epoch(meta: dict, cfg: dict) -> str:
    """"epoch 7 of 10", counted from 1 as the training log prints it (metadata counts from 0)."""
    epoch = meta.get("epoch")
    if not isinstance(epoch, int):
        return "n/a"
    return f"epoch {epoch + 1} of {cfg.get('epochs')}"


def _training_extras(cfg: dict, meta: dict) -> str:
    """Box guidance, EMA, a starting checkpoint and the run's own note, when the run had them."""
    parts = []
    if cfg.get("init_checkpoint"):
        parts.append(f"Started from `{cfg['init_checkpoint']}`.")
    if cfg.get("box_loss_weight"):
        parts.append(f"Box-guided loss weight {cfg['box_loss_weight']} (CAM mass inside the fracture boxes of "
                     "positive training images).")
    if cfg.get("ema_decay"):
        parts.append(f"EMA of the weights, decay {cfg['ema_decay']} (the EMA weights are the ones saved).")
    if meta.get("train_note"):
        parts.append(str(meta["train_note"]))
    return (" " + " ".join(parts)) if parts else ""


def _chosen_by(cfg: dict) -> str:
    """How the saved weights were picked: the last epoch, or the best by a validation metric."""
    monitor = cfg.get("monitor")
    return "weights of the last epoch" if monitor == "last" else f"best by {monitor}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def calibration_card_lines(meta: dict[str, Any], test: dict[str, Any]) -> list[str]:
    """Calibration (ECE before/after), the operating points and the OOD warning, from the metadata.

    Written by ``python -m fracture calibrate`` (temperature, operating points,
    OOD) and ``evaluate --write-meta`` (the test split's calibration block and
    operating points); a checkpoint without them gets one line saying how.
    """
    from fracture.checkpoints.decision import calibrated_threshold

    block = meta.get("calibration") or {}
    lines = ["## Calibration, operating points and out-of-distribution warning", ""]
    if not block.get("temperature"):
        return lines + ["Not calibrated yet: `python -m fracture calibrate --checkpoint CHECKPOINT --data DATA`, "
                        "then `evaluate --write-meta` again.", ""]
    temperature = float(block["temperature"])
    bias = float(block.get("bias") or 0.0)
    calib = (test.get("image") or {}).get("calibration") or {}
    if bias:
        alone = block.get("temperature_alone") or {}
        lines.append(
            f"Probabilities are calibrated on the validation split by minimising the log-loss of "
            f"p' = sigmoid(logit(p) / T + b), p the flip-averaged probability: T = {temperature:.3f}, "
            f"b = {bias:+.3f}. The bias is there because class-weighted training raises every score (the model's "
            "mean probability is above the share of fractures); a temperature alone"
            + (f" (T = {alone['temperature']:.3f}) left the validation ECE at {_fmt(alone.get('val_ece'))}"
               if alone.get("temperature") is not None else " cannot correct that")
            + ". The map is increasing, so rankings (ROC AUC) and labels do not change. Thresholds below are on "
            "the calibrated scale."
        )
    else:
        lines.append(
            f"Probabilities are temperature-scaled: T = {temperature:.3f}, fitted on the validation split by "
            "minimising the log-loss; p' = sigmoid(logit(p) / T) of the flip-averaged probability, so rankings "
            "(ROC AUC) and labels do not change. Thresholds below are on the calibrated scale."
        )
    lines.append("")
    if calib.get("ece") is not None:
        lines.append(
            f"Expected calibration error (15 equal-width bins), test split, image level: "
            f"**{_fmt(calib.get('ece_uncalibrated'))} before, {_fmt(calib.get('ece'))} after**; Brier score "
            f"{_fmt(calib.get('brier_uncalibrated'), 4)} before, {_fmt(calib.get('brier'), 4)} after "
            f"(validation: ECE {_fmt(block.get('val_ece_uncalibrated'))} before, {_fmt(block.get('val_ece'))} after)."
        )
        if calib["ece"] >= calib.get("ece_uncalibrated", float("inf")):
            lines.append("")
            lines.append(
                "Calibration did not lower the test ECE: the map fitted on about 500 validation images (about 90 "
                "positives) does not carry over to the test split, whose 15-bin estimates are noisy too."
            )
        lines.append("")
    points = meta.get("operating_points") or []
    if points:
        held_out = {p.get("name"): p for p in (test.get("image") or {}).get("operating_points") or []}
        lines += [
            "Operating points, chosen on the validation split (PPV and NPV at that split's prevalence); test split "
            "figures are held out:",
            "",
            "| operating point | threshold | val sensitivity | val specificity | val PPV | val NPV "
            "| test sensitivity | test specificity | test PPV | test NPV |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for point in points:
            t = held_out.get(point.get("name"), {})
            lines.append(
                f"| {point.get('label', point.get('name'))} | {calibrated_threshold(meta, point['threshold']):.3f} "
                f"| {_fmt(point.get('sensitivity'))} | {_fmt(point.get('specificity'))} | {_fmt(point.get('ppv'))} "
                f"| {_fmt(point.get('npv'))} | {_fmt(t.get('sensitivity'))} | {_fmt(t.get('specificity'))} "
                f"| {_fmt(t.get('ppv'))} | {_fmt(t.get('npv'))} |"
            )
        lines.append("")
    ood = meta.get("ood") or {}
    if ood.get("threshold") is not None:
        measured = ood.get("measured") or {}
        lines.append(
            f"Out-of-distribution warning: a probabilistic-PCA Mahalanobis distance of the model's pooled features "
            f"({ood.get('components')} components, fitted on {ood.get('n_fit')} {ood.get('fitted_on')} images); "
            f"threshold {ood['threshold']:.3f}, set so it flags {_pct(ood.get('val_flag_rate'))} of the validation "
            "split (at most 5%)"
            + (f"; it flags {_pct(measured['test_flag_rate'])} of the test split." if measured.get("test_flag_rate")
               is not None else ".")
        )
        probes = measured.get("probes") or {}
        if probes:
            lines += ["", "| probe images (not training radiographs) | flagged |", "| --- | --- |"]
            lines += [f"| {name} | {r['flagged']}/{r['n']} ({_pct(r['flagged'] / r['n'] if r['n'] else None)}) |"
                      for name, r in probes.items()]
        lines.append("")
    return lines


def _rate(result: dict[str, Any] | None, key: str = "gated") -> str:
    if not result or not result.get("n"):
        return "n/a"
    return f"{result[key]}/{result['n']} ({100 * result[key] / result['n']:.1f}%)"


def gate_card_lines(meta: dict[str, Any]) -> list[str]:
    """The "What is this image?" section: level (a) gate rates from ``meta["radiograph_gate"]["measured"]``."""
    gate = meta.get("radiograph_gate")
    if not isinstance(gate, dict):
        return []
    measured = gate.get("measured") or {}
    lines = [
        "## What is this image? (not a radiograph / unlike the training data)",
        "",
        "Level (a), *not a radiograph*: no fractured / not fractured label is given when the DICOM header names "
        "another modality (CT, MR, NM, US, PT, OT, SC...), when the picture is clearly in colour (colourfulness "
        f"above {gate.get('colour_limit')}), or when a logistic regression on the model's pooled features and "
        f"{len(gate.get('statistics') or [])} image statistics says so (fitted on {gate.get('n_radiographs')} "
        f"training-split radiographs against {gate.get('n_other')} generated non-radiographs; threshold "
        f"{_fmt(gate.get('threshold'))}, refusing {_pct(gate.get('val_gated_rate'))} of the validation split). "
        "Level (b), *a radiograph unlike the training data*: the prediction is shown with a milder warning that "
        "says how the image differs where known (OOD score above, 16-bit file, a child's age or another body part "
        "in the DICOM header).",
        "",
    ]
    test = measured.get("test")
    probes = measured.get("probes") or {}
    if test or probes:
        lines += ["Refused by the pixel check (level a), on images the fit never saw (`python -m fracture calibrate`):",
                  "", "| images | refused |", "| --- | --- |"]
        if test:
            lines.append(f"| test split radiographs | {_rate(test)} |")
        for name, result in probes.items():
            extra = f"; as colour files {_rate(result, 'gated_as_files')}" if "gated_as_files" in result else ""
            lines.append(f"| {name} | {_rate(result)}{extra} |")
        lines.append("")
    return lines


_SHORTCUT_COLUMNS = (("mean abs dP", "mean_abs_dp", _fmt, True), ("labels flipped", "flip_rate", _pct, True),
                     ("heatmap max on it", "heatmap_on_stamp", _pct, False),
                     ("before", "heatmap_on_stamp_before", _pct, False), ("box share", "box_share", _pct, False))
"""The shortcut table's columns after the alteration's name: title, key in a ``shortcuts`` report, format,
and whether the cell is filled when the key is absent (only stamped alterations have the heatmap columns)."""


def _shortcut_table(perturbations: dict[str, Any], n_columns: int) -> list[str]:
    """One shortcut table (the first ``n_columns`` of :data:`_SHORTCUT_COLUMNS`); a missing figure is blank."""
    columns = _SHORTCUT_COLUMNS[:n_columns]
    lines = ["| alteration | " + " | ".join(column[0] for column in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    from fracture.assess.shortcuts import LABELS, read_stored_report

    for name, f in read_stored_report({"perturbations": perturbations})["perturbations"].items():
        if not isinstance(f, dict):
            continue
        cells = [fmt(f.get(key)) if always or key in f else "" for _, key, fmt, always in columns]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return lines


def shortcut_card_lines(meta: dict[str, Any]) -> list[str]:
    """The "Shortcuts" section, from ``meta["shortcuts"]`` (``python -m fracture shortcuts --write-meta``),
    and the same figures for the model it replaced when ``meta["shortcuts_before"]`` holds them."""
    report = meta.get("shortcuts")
    if not isinstance(report, dict) or not report.get("perturbations"):
        return []
    lines = [
        "## Shortcuts",
        "",
        f"Each of {report.get('n')} {report.get('split')}-split images altered one way at a time and predicted again "
        f"(heatmap {report.get('heatmap')}): mean |dP| (calibrated probability), how often the label at threshold "
        f"{_fmt(report.get('threshold'))} flips, and for pasted things how often the heatmap maximum lands on them "
        "(their box widened by 3% of the longer side; *before*: the same box on the unaltered image's heatmap).",
        "",
        *_shortcut_table(report["perturbations"], len(_SHORTCUT_COLUMNS)),
        "", f"Reproduce: `{report.get('command')}`", "",
    ]
    before = meta.get("shortcuts_before")
    if isinstance(before, dict) and isinstance(before.get("perturbations"), dict):
        lines += [f"Before: {before.get('model', 'the previous model')}, same images and alterations:", "",
                  *_shortcut_table(before["perturbations"], 4),
                  "", f"Reproduce: `{before.get('command')}`", ""]
    return lines


def promotion_card(meta: dict[str, Any], checkpoint_name: str, source: Path) -> str:
    """The card written beside a promoted checkpoint: the full card when it holds test metrics, else the
    short true one (:func:`fracture.checkpoints.promote.short_card`)."""
    from fracture.checkpoints.promote import short_card
    from fracture.errors import CheckpointError

    try:
        return render_model_card(meta, checkpoint_name=checkpoint_name)
    except (CheckpointError, KeyError, TypeError, ValueError):
        return short_card(meta, checkpoint_name, source)


def _reproduce_training(train_config: dict) -> str:
    """The training command: the run's recipe and the flags it changed (fracture.recipes.catalogue)."""
    from fracture.errors import ConfigError
    from fracture.recipes.catalogue import reproduce_command

    try:
        return reproduce_command(train_config)
    except ConfigError:  # a config written by another version: name its recipe at least
        return f"python -m fracture train --config {train_config.get('recipe') or 'RECIPE.json'} --out RUN_DIR"


def attempts_card_lines(meta: dict[str, Any]) -> list[str]:
    """Every model tried on the way to this one, with the validation figures it was chosen by."""
    attempts = meta.get("attempts")
    if not isinstance(attempts, list) or not attempts:
        return []
    lines = [
        "## Attempts (validation split; the test split was not used to choose)",
        "",
        str(meta.get("selection_rule") or ""),
        "",
        "| attempt | what | val ROC AUC | val pointing hit, Grad-CAM on the last block | val pointing hit, best heatmap (method @ layer) | chosen |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for a in attempts:
        if not isinstance(a, dict):
            continue
        lines.append(
            f"| {a.get('name', '?')} | {a.get('what', '')} | {_fmt(a.get('val_roc_auc'))} | "
            f"{_fmt(a.get('val_pointing_gradcam_final'))} | {_fmt(a.get('val_pointing_best'))} "
            f"({a.get('best_method', '?')}) | {'**yes**' if a.get('chosen') else ''} |"
        )
    lines.append("")
    return lines
