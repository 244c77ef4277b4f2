"""AppTest: the home page, the shared sidebar, and every page with no model yet."""
from __future__ import annotations

import pytest

from app_support import (  # noqa: F401  (fixtures)
    app_home,
    demo_template,
    fresh_app_home,
    assert_no_exception,
    run_page,
    REPO_ROOT,
    switch_to,
)

PAGES = (
    "pages/1_Dataset_Explorer.py",
    "pages/2_Preprocessing_Lab.py",
    "pages/3_Train.py",
    "pages/4_Predict.py",
    "pages/5_Compare.py",
)


def test_home_generates_the_demo_set_and_links_every_page(fresh_app_home):
    from fracture.data import open_dataset
    from fracture.ui.demo import READY_FLAG

    app_home = fresh_app_home
    assert not (app_home / "demo").exists()
    at = run_page()
    assert_no_exception(at)
    assert (app_home / "demo" / READY_FLAG).is_file()
    assert "Fracture Lab" in at.title[0].value
    assert any("not a medical device" in w.value for w in at.warning)
    manifest = open_dataset(app_home / "demo")
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert f"{len(manifest.frame):,} images" in captions
    assert f"{manifest.frame['study_id'].nunique():,} studies" in captions
    links = {link.proto.page.rsplit("/", 1)[-1] for link in at.get("page_link")}
    expected = {page.split("/")[1].removesuffix(".py").split("_", 1)[1] for page in PAGES}
    assert expected == links
    assert any("No model yet" in i.value for i in at.info)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_works_with_no_model(app_home, page):
    at = run_page(page)
    assert_no_exception(at)
    assert at.title, "the page drew nothing"
    if page.endswith(("4_Predict.py", "5_Compare.py")):
        assert at.info, "a page that needs a model says so"


def test_a_folder_outside_the_data_roots_is_refused_and_pages_stay_up(app_home, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    at = run_page()
    at.radio(key="sidebar_dataset_source").set_value("Folder path").run()
    at.text_input(key="sidebar_dataset_path").set_value(str(outside)).run()
    assert_no_exception(at)
    assert any("outside the allowed data folders" in e.value for e in at.sidebar.error)
    switch_to(at, "pages/1_Dataset_Explorer.py").run()
    assert_no_exception(at)
    assert any("outside the allowed data folders" in i.value for i in at.info)
    assert not at.metric, "no dataset numbers for a refused folder"


def test_a_folder_under_an_allowed_root_becomes_the_active_dataset(app_home):
    at = run_page()  # generates the demo set, which lies under an allowed root
    at.radio(key="sidebar_dataset_source").set_value("Folder path").run()
    at.text_input(key="sidebar_dataset_path").set_value(str(app_home / "demo")).run()
    assert not at.sidebar.error
    switch_to(at, "pages/1_Dataset_Explorer.py").run()
    assert_no_exception(at)
    assert at.metric


def test_no_pages_folder_beside_the_entry_script():
    """A ``pages/`` folder beside app.py puts a server's first request into
    Streamlit's directory mode (a nameless page, empty main area)."""
    assert not (REPO_ROOT / "pages").exists()
    assert (REPO_ROOT / "pages").is_dir()
