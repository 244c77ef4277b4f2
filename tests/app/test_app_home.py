"""AppTest: the home page, the shared sidebar, and every page with no model yet."""
from __future__ import annotations

from pathlib import Path

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

# Every page script in pages/ (a new page is covered without editing this file).
PAGES = tuple(sorted(f"pages/{p.name}" for p in (REPO_ROOT / "pages").glob("[0-9]*_*.py")))


def test_home_is_usable_at_once_while_the_demo_set_is_built_in_the_background(fresh_app_home):
    from fracture.data import open_dataset
    from fracture.ui.demo import READY_FLAG

    app_home = fresh_app_home
    assert not (app_home / "demo").exists()
    at = run_page()
    assert_no_exception(at)
    assert "Fracture Lab" in at.title[0].value, "Home draws without waiting for the demo set"
    assert any("not a medical device" in w.value for w in at.warning)
    assert any("being generated in the background" in c.value for c in at.sidebar.caption)
    links = {link.proto.page.rsplit("/", 1)[-1] for link in at.get("page_link")}
    expected = {page.split("/")[1].removesuffix(".py").split("_", 1)[1] for page in PAGES}
    assert expected <= links
    assert any("No model yet" in i.value for i in at.info)
    switch_to(at, "pages/1_Dataset_Explorer.py").run()  # the first page that needs the set waits for it
    assert_no_exception(at)
    assert (app_home / "demo" / READY_FLAG).is_file()
    assert at.metric, "the Explorer shows the demo set's numbers"
    at.run()
    manifest = open_dataset(app_home / "demo")
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert f"{len(manifest.frame):,} images" in captions
    assert f"{manifest.frame['study_id'].nunique():,} studies" in captions


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


def test_pages_live_in_pages_and_a_directory_mode_run_goes_through_app_py(app_home):
    """AppTest starts every run in Streamlit's old ``pages/`` directory mode (as a fresh server's first
    request does; nothing of Streamlit is patched): Home and a page run directly by it still end under
    app.py's navigation, with the shared sidebar. The real first request is checked in a browser by
    tests/app/test_first_request.py."""
    from streamlit.testing.v1 import AppTest

    from app_support import APP, TIMEOUT

    assert all((REPO_ROOT / page).is_file() for page in PAGES)
    assert not (REPO_ROOT / "app_pages").exists()
    assert not (REPO_ROOT / "fracture" / "ui" / "directory_mode.py").exists()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert_no_exception(at)
    assert [t.value for t in at.title][:1] == ["🦴 Fracture Lab"]
    assert any(h.value == "Model" for h in at.sidebar.subheader), "the shared sidebar"
    switch_to(at, "pages/3_Train.py").run()  # the page script itself, as directory mode runs it
    assert_no_exception(at)
    assert any("Train" in t.value for t in at.title)
    assert [h.value for h in at.sidebar.subheader].count("Model") == 1, "app.py's sidebar, drawn once"


def test_after_a_page_stops_early_the_next_pages_still_draw_the_sidebar_and_keep_a_click(app_home):
    """Train with no runs ends in ``st.stop()``; after it, session state cannot be written in that run
    (every access raises StopException), so the hand-over of the sidebar's choice must not live there:
    the pages that follow draw the sidebar once, see a model written since, and a click is not lost
    to a rerun."""
    from app_support import write_tiny_run

    at = run_page("pages/3_Train.py")
    assert any("No runs yet" in i.value for i in at.info)  # the page stopped early
    write_tiny_run(app_home / "runs", "tiny")
    at.run()
    assert [h.value for h in at.sidebar.subheader].count("Model") == 1
    switch_to(at, "pages/1_Dataset_Explorer.py").run()
    assert_no_exception(at)
    assert [h.value for h in at.sidebar.subheader].count("Model") == 1
    assert at.session_state["sidebar_model"] == "tiny (run)", "the run written after Train stopped"
    switch_to(at, "pages/3_Train.py").run()
    at.button(key="promote-submit").click().run()  # the click of this very run reaches the page
    assert_no_exception(at)
    assert any("Promoted to" in s.value for s in at.success)


def test_no_streamlit_internals_are_patched_in_the_app_or_its_tests():
    """Issue 19 item 7: only Streamlit's supported APIs, tests included."""
    own = Path(__file__).resolve()
    sources = [REPO_ROOT / "app.py", *(REPO_ROOT / "pages").glob("*.py"),
               *(REPO_ROOT / "fracture").rglob("*.py"), *(REPO_ROOT / "tests").rglob("*.py")]
    private = ("PagesManager", "streamlit.runtime", "app_test.", "uses_pages_directory")
    offenders = [f"{path.relative_to(REPO_ROOT)}: {word}" for path in sources if path.resolve() != own
                 for word in private if word in path.read_text(encoding="utf-8")]
    assert not offenders, offenders


def test_home_links_real_xrays_to_the_predict_page(app_home):
    from fracture.data.gallery import load_gallery

    at = run_page()
    assert_no_exception(at)
    keys = {item.key for item in load_gallery()}
    links = [link.proto for link in at.get("page_link") if "xray=" in link.proto.query_string]
    assert len(links) >= 4
    for link in links:
        assert link.page.endswith("Predict")
        params = dict(pair.split("=") for pair in link.query_string.split("&"))
        assert params["input"] == "Sample" and params["xray"] in keys
    assert any("FracAtlas" in c.value and "CC BY 4.0" in c.value for c in at.caption)


def test_the_dataset_choice_lives_in_the_url_so_a_reload_keeps_it(app_home):
    from streamlit.testing.v1 import AppTest

    from app_support import APP, TIMEOUT

    at = run_page()
    assert at.radio(key="sidebar_dataset_source").proto.query_param_key == "sidebar_dataset_source"
    at.radio(key="sidebar_dataset_source").set_value("Folder path").run()
    assert at.text_input(key="sidebar_dataset_path").proto.query_param_key == "sidebar_dataset_path"
    reloaded = AppTest.from_file(str(APP), default_timeout=TIMEOUT)  # a new session: only the URL is left
    reloaded.query_params["sidebar_dataset_source"] = "Folder path"
    reloaded.query_params["sidebar_dataset_path"] = str(app_home / "demo")
    reloaded.run()
    assert_no_exception(reloaded)
    assert reloaded.radio(key="sidebar_dataset_source").value == "Folder path"
    assert reloaded.text_input(key="sidebar_dataset_path").value == str(app_home / "demo")
    assert not reloaded.sidebar.error


def test_the_sidebar_lists_datasets_found_under_the_allowed_roots(app_home, demo_template, tmp_path, monkeypatch):
    import shutil

    roots = tmp_path / "data"
    shutil.copytree(demo_template, roots / "class" / "wrist-study")  # two levels down
    (roots / "empty").mkdir()
    monkeypatch.setenv("FRACTURE_DATA_ROOTS", str(roots))
    at = run_page()
    at.radio(key="sidebar_dataset_source").set_value("Folder path").run()
    assert_no_exception(at)
    found = at.sidebar.selectbox(key="sidebar_dataset_found")
    assert "wrist-study (mura)" in found.options and not any("empty" in o for o in found.options)
    found.set_value(str((roots / "class" / "wrist-study").resolve())).run()
    assert_no_exception(at)
    assert at.text_input(key="sidebar_dataset_path").value == str((roots / "class" / "wrist-study").resolve())
    assert not at.sidebar.error
    assert any("images" in c.value and "studies" in c.value for c in at.sidebar.caption)
