"""End to end in a real headless Chromium: the served dashboard shows the demo dataset's classes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser_helpers import (
    APP_PAGES,
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    choose,
    click_in_tab,
    sample_first_load,
    streamlit_server,
    wait_until_idle,
)

ROOT = Path(__file__).resolve().parents[1]
CHEST_XRAY = ROOT.parent / "shared" / "data" / "chest_xray" / "train"
PAGE_PATHS = {"Home": "", "Dataset": "/dataset", "Preprocessing lab": "/lab", "Train": "/train", "Evaluate": "/evaluate", "Predict": "/predict"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)"),
]


@pytest.fixture(scope="module")
def server_url():
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server() as url:
        yield url


SCRATCH_RECIPE = "X-ray recipe, from scratch (works offline)"


def choose_scratch_recipe(page) -> None:
    """Pick the scratch recipe and wait for its own Epochs field (each recipe has one, with its default): typing into
    the field before the rerun swaps it in types into the field that is about to go."""
    from core.recipes import RECIPE_EPOCHS

    choose(page, "Recipe", SCRATCH_RECIPE)
    epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
    for _ in range(60):
        if epochs.input_value() == str(RECIPE_EPOCHS["xray-scratch"]):
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"the scratch recipe's Epochs field did not appear (shows {epochs.input_value()})")


def sidebar_link(page, title: str):
    """The app's own link to a page in the sidebar (drawn by app.py; Streamlit's automatic list is off)."""
    return page.locator("[data-testid='stSidebar'] a", has_text=title).first


@pytest.fixture
def page():
    """A fresh headless Chromium page (Debian's browser, never a downloaded one)."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def test_deep_link_as_first_request_goes_through_app(server_url: str, page) -> None:
    """A bookmark to /lab right after a server start must still get app.py's navigation and sidebar.

    Runs first in this module on purpose: Streamlit's legacy pages/ mode only bites on the first run.
    """
    page.goto(f"{server_url}/lab")
    page.get_by_text("result range").first.wait_for(timeout=120_000)
    page.get_by_text("Active dataset").first.wait_for(timeout=30_000)
    nav = page.locator("[data-testid='stSidebar']").inner_text()
    assert "Preprocessing lab" in nav and "common" not in nav
    assert page.locator("[data-testid='stException']").count() == 0


def test_sidebar_lists_only_the_apps_pages_from_the_first_paint(page) -> None:
    """A fresh server, sampled every 100 ms from navigation: the sidebar never shows Streamlit's automatic
    list of pages/ files ("app", "common", ...), and every page's deep link opens that page."""
    with streamlit_server() as url:
        first = sample_first_load(page, url, content_text="PNEUMONIA (150)")
        assert first["content_s"] is not None, "Home never showed the demo classes"
        assert first["foreign_entries"] == [], first["entries_seen"]
        assert first["entries_seen"] == APP_PAGES
        for title, path in PAGE_PATHS.items():
            if not path:
                continue
            seen = sample_first_load(page, url, title=title, path=path)
            assert seen["title_s"] is not None, f"{path} did not open {title}"
            assert seen["foreign_entries"] == [], (path, seen["entries_seen"])
        assert page.locator("[data-testid='stException']").count() == 0


def test_home_page_shows_demo_classes_in_chromium(server_url: str, page) -> None:
    page.goto(server_url)
    page.get_by_text("PNEUMONIA (150)").first.wait_for(timeout=120_000)
    assert page.get_by_text("NORMAL (150)").first.is_visible()
    assert page.locator("[data-testid='stException']").count() == 0
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    sidebar_link(page, "Dataset").click()
    page.get_by_text("Image sizes").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "dataset.png"), full_page=True)


@pytest.mark.skipif(not CHEST_XRAY.is_dir(), reason="../shared/data/chest_xray/train is not present")
def test_chest_xray_folder_in_chromium(server_url: str, page) -> None:
    """The real data through the page: counts, sizes, and the labs on one of its images."""
    page.goto(f"{server_url}/dataset")
    page.get_by_text("Folder", exact=True).first.click()
    page.get_by_role("textbox", name="Path on this machine").fill(str(CHEST_XRAY))
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Open", exact=True).click()
    page.get_by_text("5,216 images · 2 classes").first.wait_for(timeout=120_000)
    page.get_by_text("width 224-224 px (median 224), height 224-224 px (median 224)").first.wait_for(timeout=30_000)
    assert page.locator("[data-testid='stException']").count() == 0
    # the sidebar is drawn after the page, so it names the dataset just opened
    page.locator("[data-testid='stSidebarUserContent']").get_by_text(str(CHEST_XRAY)).wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "chest_xray_dataset.png"), full_page=True)
    # the run that opened the folder drew more above the tabs than the next one does: an unkeyed st.tabs remounted there
    # and snapped back to Overview, hiding the duplicates the button had just found
    wait_until_idle(page)
    page.get_by_role("tab", name="Duplicates and leakage").click()
    page.get_by_role("button", name="Find duplicates").click()
    page.get_by_text("Test images with a twin in train").first.wait_for(state="attached", timeout=180_000)
    wait_until_idle(page)
    assert page.get_by_role("tab", name="Duplicates and leakage").get_attribute("aria-selected") == "true"
    sidebar_link(page, "Home").click()
    page.get_by_text("NORMAL (1,341)").first.wait_for(timeout=60_000)
    assert page.get_by_text("PNEUMONIA (3,875)").first.is_visible()
    sidebar_link(page, "Preprocessing lab").click()
    page.get_by_text("result range").first.wait_for(timeout=60_000)
    page.get_by_role("tab", name="Augmentation").click()
    page.get_by_text("Exactly the Keras preprocessing layers").first.wait_for(timeout=60_000)
    page.wait_for_timeout(2000)
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(ARTIFACTS / "chest_xray_lab.png"), full_page=True)


@pytest.mark.slow
def test_train_extend_stop_resume_in_chromium(server_url: str, page) -> None:
    """Start a run on the demo set, watch the curves move, extend by 2, stop, resume, see it complete."""
    page.goto(f"{server_url}/train")
    page.get_by_role("button", name="Start training").wait_for(timeout=120_000)
    choose_scratch_recipe(page)  # seconds an epoch; the preselected ImageNet recipe takes minutes
    page.get_by_role("spinbutton", name="Epochs", exact=True).fill("10")  # 128 px: about a second an epoch
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"running · epoch [1-5]/10")).first.wait_for(timeout=120_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)  # the curves are there and moving
    page.get_by_role("button", name="Extend by 2").click()
    page.get_by_text(re.compile(r"running · epoch \d+/12")).first.wait_for(timeout=60_000)
    page.get_by_role("button", name="Stop after epoch").click()
    page.get_by_text(re.compile(r"stopped · epoch \d+/12")).first.wait_for(timeout=120_000)
    page.get_by_role("button", name="Resume").click()
    # early stopping may end it before epoch 12; what matters is that the resumed job completes
    page.get_by_text(re.compile(r"completed · epoch \d+/12")).first.wait_for(timeout=180_000)
    # the sidebar's latest run follows it too, without a reload (it used to stay at the state the page was drawn with)
    page.locator("[data-testid='stSidebar']").get_by_text(re.compile(r"xraynet-\w+ \(completed\)")).wait_for(timeout=15_000)
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(ARTIFACTS / "train.png"), full_page=True)


@pytest.mark.slow
def test_evaluate_and_predict_with_gradcam_in_chromium(server_url: str, page) -> None:
    """A trained run: Evaluate predicts the test split and shows the metrics; Predict takes an upload
    and shows the probabilities and the Grad-CAM overlay."""
    from core.dataset import DEMO, open_dataset
    from core.models import ModelConfig
    from core.pipeline import PipelineConfig
    from core.runs import create_run
    from core.train import TrainConfig, run_job

    config = TrainConfig(data="demo", epochs=1, tensorboard=False, model=ModelConfig(image_size=48), pipeline=PipelineConfig(image_size=48))
    assert run_job(create_run(config.to_dict()), verbose=0) == "completed"  # the newest run: both pages preselect it
    page.goto(f"{server_url}/evaluate")
    page.get_by_role("button", name="Predict", exact=True).click(timeout=120_000)
    page.get_by_text("Sensitivity").first.wait_for(timeout=120_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(ARTIFACTS / "evaluate.png"), full_page=True)

    image = open_dataset(DEMO).table.query("label == 'PNEUMONIA'")["path"].iloc[0]
    page.goto(f"{server_url}/predict")
    page.get_by_text("X-ray images or DICOM files").first.wait_for(timeout=120_000)
    from pydicom.data import get_testdata_file

    page.locator("input[type=file]").first.set_input_files([image, get_testdata_file("CT_small.dcm")])
    page.get_by_text(re.compile(r"Grad-CAM for \w+ at layer")).first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"threshold 0\.\d+")).first.wait_for(timeout=30_000)
    assert page.locator("[data-testid='stException']").count() == 0
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "predict.png"), full_page=True)

    choose(page, "Image", "CT_small.dcm")  # the DICOM: window presets and its facts appear
    page.get_by_text("DICOM facts (no patient-identifying fields)").first.wait_for(timeout=60_000)
    page.get_by_text("Grad-CAM settings").first.click()
    page.get_by_text("Explain class", exact=True).wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    choose(page, "Explain class", "NORMAL")
    page.get_by_text(re.compile(r"Grad-CAM for NORMAL at layer")).first.wait_for(timeout=60_000)
    slider = page.locator("[data-testid='stSlider']").filter(has=page.get_by_text("Opacity", exact=True)).get_by_role("slider")
    slider.focus()
    for _ in range(4):
        slider.press("ArrowRight")
    page.get_by_text("0.60").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(ARTIFACTS / "predict_dicom.png"), full_page=True)


@pytest.mark.slow
def test_presenters_tour_in_chromium(server_url: str, page) -> None:
    """One click on Home: a real job trains with live curves, the model is tested and explained, and the
    run it leaves opens on Evaluate (its test predictions already there) and Predict."""
    page.goto(server_url)
    page.get_by_role("button", name="Start the tour").click(timeout=120_000)
    page.get_by_text("1 · Learning.").first.wait_for(timeout=60_000)
    page.get_by_text("3 · Explaining.").first.wait_for(timeout=180_000)
    page.get_by_text(re.compile(r"of 100 children with pneumonia, it would flag about \d+")).first.wait_for(timeout=30_000)
    page.get_by_text("where the model looked (Grad-CAM)").first.wait_for(timeout=30_000)
    run_name = re.search(r"times \((\S+)\)", page.locator("p", has_text="1 · Learning.").first.inner_text()).group(1)
    assert page.locator("[data-testid='stException']").count() == 0
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "tour.png"), full_page=True)

    page.get_by_role("link", name=re.compile("Evaluate: every metric")).click()
    page.get_by_text("Sensitivity").first.wait_for(timeout=120_000)  # the tour's test predictions are stored
    page.get_by_text("predictions-test.csv").first.wait_for(timeout=30_000)
    assert page.get_by_text(run_name).first.is_visible()  # the newest run: Evaluate preselects it
    assert page.locator("[data-testid='stException']").count() == 0
    sidebar_link(page, "Predict").click()
    page.get_by_text("X-ray images or DICOM files").first.wait_for(timeout=120_000)
    assert page.get_by_text(run_name).first.is_visible()
    assert page.locator("[data-testid='stException']").count() == 0


@pytest.mark.slow
def test_external_curves_gap_and_adaptation_in_chromium(server_url: str, page, tmp_path: Path) -> None:
    """A recipe run started from the Train page watching another 'hospital' (the demo's images, shifted) shows validation
    and external curves while it runs; Evaluate shows the gap panel and adapts the run to that site from its unlabeled
    images; the adapted run is selectable on Predict."""
    from tests.test_external_adapt import _shifted_site

    labelled, flat = _shifted_site(tmp_path)
    page.goto(f"{server_url}/train")
    page.get_by_role("button", name="Start training").wait_for(timeout=120_000)
    choose_scratch_recipe(page)
    page.get_by_role("spinbutton", name="Epochs", exact=True).fill("4")
    page.get_by_role("textbox", name=re.compile("External sets to watch")).fill(str(labelled))
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"running · epoch [1-4]/4")).first.wait_for(timeout=120_000)
    page.get_by_text("Validation and the watched external sets").first.wait_for(timeout=120_000)
    # the heading comes first; plotly mounts its charts a moment later
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
    page.get_by_text(re.compile(r"completed · epoch \d/4")).first.wait_for(timeout=240_000)
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(ARTIFACTS / "train_external.png"), full_page=True)

    page.goto(f"{server_url}/evaluate")
    page.get_by_role("button", name="Predict", exact=True).click(timeout=120_000)
    page.get_by_text("Sensitivity").first.wait_for(timeout=120_000)
    page.get_by_role("tab", name="Generalisation gap").click()
    page.get_by_text(re.compile(r"external-labelled: accuracy .* on the internal test split")).first.wait_for(timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "evaluate_gap.png"), full_page=True)
    page.get_by_role("tab", name="Adapt to a site").click()
    page.get_by_role("textbox", name=re.compile("Folder of the new site's images")).fill(str(flat))
    page.keyboard.press("Enter")
    click_in_tab(page, "Adapt to a site", "Adapt")
    page.get_by_text(re.compile(r"Adapted run \S+ created")).first.wait_for(timeout=240_000)
    wait_until_idle(page)
    page.get_by_role("tab", name="Adapt to a site").click()  # the rerun may show the first tab again
    created = page.get_by_text(re.compile(r"Created \S+ from \S+: 88 images")).first
    created.wait_for(timeout=60_000)
    child = re.search(r"Created (\S+) from", created.inner_text()).group(1)
    # by default the threshold moves to the site's own; the page says what the adapted run decides with (or why it did not move)
    page.screenshot(path=str(ARTIFACTS / "evaluate_adapt.png"), full_page=True)
    said = created.inner_text()
    assert re.search(r"Threshold \d\.\d{3} \(", said) and ("where the site's scores part" in said or "stays the parent's" in said), said
    assert page.locator("[data-testid='stException']").count() == 0

    sidebar_link(page, "Predict").click()
    page.get_by_text("X-ray images or DICOM files").first.wait_for(timeout=120_000)
    box = page.locator("[data-testid='stSelectbox']").filter(has=page.get_by_text("Run", exact=True)).first
    box.click()
    # the adapted run is offered, saying what it was made from
    page.get_by_role("option", name=re.compile(rf"^{child} · adapted from \S+ to ")).wait_for(timeout=30_000)
    page.keyboard.press("Escape")
    assert page.locator("[data-testid='stException']").count() == 0
