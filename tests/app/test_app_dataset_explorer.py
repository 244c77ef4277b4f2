"""AppTest: the Dataset Explorer — summary cards, charts, gallery, problems."""
from __future__ import annotations

from app_support import (  # noqa: F401  (fixtures)
    app_home,
    demo_template,
    fresh_app_home,
    assert_no_exception,
    metric_values,
    run_page,
)

PAGE = "pages/1_Dataset_Explorer.py"


def test_cards_charts_and_gallery_match_the_dataset(app_home):
    at = run_page(PAGE)
    assert_no_exception(at)
    from fracture.data import open_dataset

    frame = open_dataset(app_home / "demo").frame
    cards = metric_values(at)
    assert cards["Images"] == f"{len(frame):,}"
    assert cards["Studies"] == f"{frame['study_id'].nunique():,}"
    assert cards["Patients"] == f"{frame['patient_id'].nunique():,}"
    assert cards["Positive (abnormal)"] == f"{int(frame['label'].sum()):,}"
    assert cards["Problem files"] == "0"
    assert len(at.get("plotly_chart")) == 4  # balance, sizes, modes, intensities
    captions = " ".join(c.value for c in at.caption)
    assert f"{frame['study_id'].nunique():,} studies, {len(frame):,} images match" in captions
    assert at.get("image"), "the gallery shows thumbnails"


def test_gallery_filters_paginate_and_open_the_full_size_view(app_home):
    at = run_page(PAGE)
    from fracture.data import open_dataset

    frame = open_dataset(app_home / "demo").frame
    positives = frame[frame["label"] == 1]
    at.selectbox(key="explorer-label").set_value(1).run()
    assert_no_exception(at)
    captions = " ".join(c.value for c in at.caption)
    assert f"{positives['study_id'].nunique():,} studies, {len(positives):,} images match" in captions
    at.number_input(key="explorer-page").set_value(2).run()
    assert_no_exception(at)
    at.button[1].click().run()  # [0] is Rescan
    assert_no_exception(at)
    assert any("px" in caption for image in at.get("image") for caption in image.captions)


def test_unreadable_files_are_listed_with_their_reason(app_home):
    from fracture.data import open_dataset

    frame = open_dataset(app_home / "demo").frame
    broken = frame["path"].iloc[0]
    with open(broken, "wb") as handle:
        handle.write(b"not a png any more")
    at = run_page(PAGE)
    assert_no_exception(at)
    problems = at.table[-1].value  # a table, not a grid: long paths wrap instead of being cut
    assert broken in set(problems.index)
    assert metric_values(at)["Problem files"] != "0"
