"""The quick demo recipe and its bench script (the training itself is measured by
``python -m fracture.bench.quick_demo``, never in the test suite)."""
from __future__ import annotations

from fracture.bench.quick_demo import DEFAULT_SEEDS, RECIPE, TARGET_AUC, QuickResult, format_results


def test_the_quick_recipe_is_a_frozen_pretrained_run_that_loads():
    from fracture.recipes.catalogue import load_recipe

    config = load_recipe(RECIPE.name)
    assert (config.model, config.mode, config.pretrained) == ("efficientnet_lite0", "frozen", True)
    assert config.recipe == "quick_demo.json"
    assert config.epochs >= 10, "enough epochs for a validation curve that visibly rises"


def test_the_bench_table_says_which_seed_missed_the_target():
    table = format_results([
        QuickResult(seed=0, test_images=163, test_abnormal=66, test_auc=0.887, val_first=0.73, val_best=0.82,
                    epochs=20, wall_s=61, cpu_s=52),
        QuickResult(seed=1, test_images=163, test_abnormal=66, test_auc=TARGET_AUC - 0.01, val_first=None,
                    val_best=None, epochs=0, wall_s=5, cpu_s=4),
        QuickResult(seed=2, test_images=163, test_abnormal=66, test_auc=None, val_first=None, val_best=None,
                    epochs=0, wall_s=5, cpu_s=4),
    ])
    rows = table.splitlines()
    assert "| 0 | 163 (66) | 0.887 | 0.730 -> 0.820 | 20 | 61 s | 52 s | yes |" in rows
    assert rows[3].startswith("| 1 |") and rows[3].endswith("| NO |")
    assert rows[4].startswith("| 2 | 163 (66) | – |") and rows[4].endswith("| NO |")
    assert rows[-1] == f"Missed {TARGET_AUC}: seeds 1, 2 (2 of 3)."


def test_the_bench_table_says_when_every_seed_passed():
    table = format_results([QuickResult(seed=s, test_images=160, test_abnormal=60, test_auc=TARGET_AUC + 0.01,
                                        val_first=0.7, val_best=0.9, epochs=20, wall_s=60, cpu_s=50)
                            for s in DEFAULT_SEEDS])
    assert table.splitlines()[-1] == f"Every seed reached {TARGET_AUC} (5 of 5)."


def test_the_bench_runs_five_seeds_by_default(monkeypatch, tmp_path, capsys):
    from fracture.bench import quick_demo

    seen = []

    def fake_run(seed, work, recipe, studies):  # the training itself is the bench's, never the suite's
        seen.append(seed)
        return QuickResult(seed=seed, test_images=1, test_abnormal=1, test_auc=TARGET_AUC - 0.1 * (seed == 3),
                           val_first=None, val_best=None, epochs=0, wall_s=0, cpu_s=0)

    monkeypatch.setattr(quick_demo, "run_seed", fake_run)
    assert quick_demo.main(["--work", str(tmp_path)]) == 1
    assert seen == [0, 1, 2, 3, 4] == list(DEFAULT_SEEDS)
    assert capsys.readouterr().out.splitlines()[-1] == f"Missed {TARGET_AUC}: seed 3 (1 of 5)."


def test_the_test_split_size_is_read_from_the_demo_set(tmp_path):
    from fracture.bench.quick_demo import held_out_size
    from fracture.data.demo import make_demo_dataset

    root = make_demo_dataset(tmp_path / "demo", seed=0, studies=20, size_range=(64, 80))
    listed = (root / "valid_image_paths.csv").read_text().splitlines()
    images, abnormal = held_out_size(root)
    assert images == len(listed) > abnormal == sum("_positive/" in row for row in listed) > 0
