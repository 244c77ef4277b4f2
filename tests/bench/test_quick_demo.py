"""The quick demo recipe and its bench script (the training itself is measured by
``python -m fracture.bench.quick_demo``, never in the test suite)."""
from __future__ import annotations

from fracture.bench.quick_demo import RECIPE, TARGET_AUC, QuickResult, format_results


def test_the_quick_recipe_is_a_frozen_pretrained_run_that_loads():
    from fracture.recipes.catalogue import load_recipe

    config = load_recipe(RECIPE.name)
    assert (config.model, config.mode, config.pretrained) == ("efficientnet_lite0", "frozen", True)
    assert config.recipe == "quick_demo.json"
    assert config.epochs >= 10, "enough epochs for a validation curve that visibly rises"


def test_the_bench_table_says_which_seed_missed_the_target():
    table = format_results([
        QuickResult(seed=0, test_auc=0.887, val_first=0.73, val_best=0.82, epochs=20, wall_s=61, cpu_s=52),
        QuickResult(seed=1, test_auc=TARGET_AUC - 0.01, val_first=None, val_best=None, epochs=0, wall_s=5, cpu_s=4),
    ])
    rows = table.splitlines()
    assert "| 0 | 0.887 | 0.730 -> 0.820 | 20 | 61 s | 52 s | yes |" in rows
    assert rows[-1].startswith("| 1 |") and rows[-1].endswith("| NO |")
