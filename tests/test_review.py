"""`digitscan review` and `run --frames`: which rows the page shows, what each tile holds, and the
page itself driven by keyboard in a real headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, draw_digit
from PIL import Image

from digitscan.cli import main
from digitscan.frames import frame_file
from digitscan.model import default_weights
from digitscan.review import write_page

CHROMIUM = os.environ.get("DIGITSCAN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DIGITSCAN_CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture()
def scans(tmp_path: Path) -> Path:
    """Six example scans, a blank page and a file that is not an image."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("clean_scan_1.png", "form_cell_2.png", "tinted_photo_2.jpg", "low_res_5.png",
                 "continental_one_4.png", "bitmap_3.bmp"):
        shutil.copy(EXAMPLES / "scans" / name, folder / name)
    draw_digit().point(lambda v: 235).save(folder / "zz_blank.png")
    (folder / "zz_broken.png").write_bytes(b"this is not a png")
    return folder


def tiles_of(page: Path) -> list[dict]:
    html = page.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="tiles">(.*?)</script>', html, re.S)
    assert found, "the page holds no tiles"
    return json.loads(found.group(1))


def picture(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("L"))


def run_rows(runner, scans: Path, out: Path, *extra: str) -> list[dict[str, str]]:
    result = runner.invoke(main, ["run", str(scans), "--quiet", "--out", str(out), *extra])
    assert result.exit_code == 1, result.output  # the broken file
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


def test_page_shows_doubtful_rows_lowest_first_then_blanks_and_errors(runner, scans, tmp_path):
    rows = run_rows(runner, scans, tmp_path / "r.csv")
    below = sorted(float(r["confidence"]) for r in rows if r["status"] == "ok")[3]  # the three least sure
    page = tmp_path / "review.html"
    result = runner.invoke(main, ["review", str(tmp_path / "r.csv"), "--below", str(below), "--out", str(page)])
    assert result.exit_code == 0, result.output
    tiles = tiles_of(page)
    assert [t["status"] for t in tiles] == ["ok"] * 3 + ["blank", "error"]
    confidences = [t["confidence"] for t in tiles[:3]]
    assert confidences == sorted(confidences) and max(confidences) < below
    for tile in tiles[:3]:
        assert picture(tile["scan"]).size and picture(tile["frame"]).shape == (28, 28)
        assert len(tile["probs"]) == 10 and abs(sum(tile["probs"]) - 1) < 1e-3
        assert int(np.argmax(tile["probs"])) == tile["digit"]
        assert Path(tile["file"]).is_absolute() and Path(tile["file"]).exists()
    assert tiles[3]["frame"] is None and tiles[3]["scan"] is not None
    assert tiles[4]["scan"] is None and "not an image" in tiles[4]["error"]
    assert "5 of 8 rows" in result.output

    runner.invoke(main, ["review", str(tmp_path / "r.csv"), "--all", "--limit", "4", "--out", str(page)])
    assert len(tiles_of(page)) == 4


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_and_jsonl_results_give_the_same_page_as_csv(runner, scans, tmp_path, fmt):
    run_rows(runner, scans, tmp_path / "r.csv")
    run_rows(runner, scans, tmp_path / f"r.{fmt}")
    for name in ("r.csv", f"r.{fmt}"):
        result = runner.invoke(main, ["review", str(tmp_path / name), "--out", str(tmp_path / f"{name}.html")])
        assert result.exit_code == 0, result.output
    assert tiles_of(tmp_path / "r.csv.html") == tiles_of(tmp_path / f"r.{fmt}.html")


def test_run_frames_keeps_what_the_model_saw_and_review_shows_it(runner, scans, tmp_path):
    frames = tmp_path / "frames"
    rows = run_rows(runner, scans, tmp_path / "r.csv", "--frames", str(frames))
    ok = [r["path"] for r in rows if r["status"] == "ok"]
    assert sorted(frames.iterdir()) == sorted(frame_file(frames, p) for p in ok)

    page = tmp_path / "review.html"
    runner.invoke(main, ["review", str(tmp_path / "r.csv"), "--all", "--out", str(page)])
    computed = {t["path"]: picture(t["frame"]) for t in tiles_of(page) if t["frame"]}
    for path in ok:  # recomputed from the scan, the frame is the one run kept
        assert np.array_equal(computed[path], np.asarray(Image.open(frame_file(frames, path))))

    marked = np.zeros((28, 28), np.uint8)
    marked[10:18, 10:18] = 255
    Image.fromarray(marked).save(frame_file(frames, ok[0]))
    runner.invoke(main, ["review", str(tmp_path / "r.csv"), "--all", "--frames", str(frames), "--out", str(page)])
    shown = {t["path"]: t for t in tiles_of(page)}
    assert np.array_equal(picture(shown[ok[0]]["frame"]), marked)  # taken from --frames, not computed


def test_review_of_images_shows_every_one_with_its_probabilities(runner, scans, tmp_path):
    page = tmp_path / "one.html"
    result = runner.invoke(main, ["review", str(scans / "clean_scan_1.png"), "--out", str(page)])
    assert result.exit_code == 0, result.output
    (tile,) = tiles_of(page)
    assert tile["status"] == "ok" and len(tile["probs"]) == 10 and tile["frame"] and tile["scan"]
    runner.invoke(main, ["review", str(scans), "--out", str(page)])
    assert len(tiles_of(page)) == len(list(scans.iterdir()))


def test_probabilities_from_other_weights_than_the_runs_are_flagged(runner, scans, tmp_path):
    run_rows(runner, scans, tmp_path / "r.csv")
    other = tmp_path / "other.pt"
    shutil.copy(default_weights(), other)
    with open(other, "ab") as f:
        f.write(b"\0")  # the same model, another file: another sha256
    result = runner.invoke(main, ["review", str(tmp_path / "r.csv"), "--weights", str(other),
                                  "--out", str(tmp_path / "p.html")])
    assert result.exit_code == 0 and "read with other weights" in result.stderr
    result = runner.invoke(main, ["review", str(tmp_path / "r.csv"), "--out", str(tmp_path / "p.html")])
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_review_of_a_file_that_is_not_results_is_one_line(runner, tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("name,digit\na.png,3\n")
    result = runner.invoke(main, ["review", str(bad), "--out", str(tmp_path / "p.html")])
    assert result.exit_code == 2
    assert "labels.csv: not a digitscan results file" in result.output
    assert not (tmp_path / "p.html").exists()


# The page in a real browser.


@pytest.fixture()
def browser(tmp_path: Path):
    """Headless Chromium (Debian's chromium and chromium-driver) driven by Selenium, downloading to tmp_path."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(f"the page test needs Chromium and ChromeDriver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver, or set DIGITSCAN_CHROMIUM and DIGITSCAN_CHROMEDRIVER")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def script_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def downloaded(target: Path, seconds: float = 20) -> str:
    """The text of a file the browser downloads, once it is there and written (Chromium may show it
    empty for a moment)."""
    deadline = time.monotonic() + seconds
    while not (target.exists() and target.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert target.exists(), "the button downloaded nothing"
    return target.read_text()


def test_page_in_a_browser_typing_digits_downloads_the_corrections(runner, scans, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run_rows(runner, scans, tmp_path / "r.csv")
    page = tmp_path / "review.html"
    assert runner.invoke(main, ["review", str(tmp_path / "r.csv"), "--all", "--out", str(page)]).exit_code == 0
    tiles = tiles_of(page)
    browser.get(page.as_uri())

    shown = browser.find_elements(By.CSS_SELECTOR, ".tile")
    assert len(shown) == len(tiles) == 8
    drawn = browser.execute_script("return [...document.images].filter(i => i.complete && i.naturalWidth).length")
    assert drawn == sum(bool(t["scan"]) + bool(t["frame"]) for t in tiles)
    assert browser.switch_to.active_element == shown[0]  # keyboard-first: the first tile has the focus

    keys = browser.switch_to.active_element
    keys.send_keys("3")                                   # tile 0: a 3, and on to tile 1
    browser.switch_to.active_element.send_keys("x")       # tile 1: not a digit
    browser.switch_to.active_element.send_keys(Keys.TAB)  # tile 2: skipped
    browser.switch_to.active_element.send_keys(Keys.ENTER)  # tile 3: the reading is right
    browser.switch_to.active_element.send_keys("7")       # tile 4: a 7 ...
    browser.switch_to.active_element.send_keys(Keys.ARROW_LEFT, Keys.BACKSPACE)  # ... taken back
    assert browser.switch_to.active_element == shown[4]
    assert "answer 3" in shown[0].text and "not a digit" in shown[1].text
    button = browser.find_element(By.ID, "download")
    assert button.text == "Download corrections.csv (3)"
    button.click()

    expected = f"path,label\n{tiles[0]['file']},3\n{tiles[1]['file']},none\n{tiles[3]['file']},{tiles[3]['digit']}\n"
    assert downloaded(tmp_path / "downloads" / "corrections.csv") == expected
    assert script_errors(browser) == []


def test_page_renders_a_thousand_tiles_lazily_and_tab_reaches_past_them(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    tiles = [{"path": f"scan_{i:04d}.png", "file": f"/forms/scan_{i:04d}.png", "digit": i % 10,
              "confidence": 0.5, "status": "ok", "error": "", "probs": [0.05] * 10, "scan": None, "frame": None}
             for i in range(1000)]
    page = tmp_path / "many.html"
    write_page(page, tiles, {"id": "many", "source": "test", "rows": 1000, "below": 0.9, "all": False})
    browser.get(page.as_uri())
    first = len(browser.find_elements(By.CSS_SELECTOR, ".tile"))
    assert 0 < first < 200  # not a thousand tiles at once
    for _ in range(first + 5):
        browser.switch_to.active_element.send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.get_attribute("data-index") == str(first + 5)
    focused.send_keys("4")
    assert "answer 4" in browser.find_elements(By.CSS_SELECTOR, ".tile")[first + 5].text
    assert script_errors(browser) == []


def test_field_page_in_a_browser_typing_a_fields_digits_downloads_them(runner, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    fields = tmp_path / "fields"
    fields.mkdir()
    for name in ("comb_4.png", "scan_5.png", "light_on_dark_6.png"):
        shutil.copy(EXAMPLES / "fields" / name, fields / name)
    assert runner.invoke(main, ["run", str(fields), "--field", "-q", "--out", str(tmp_path / "r.csv")]).exit_code == 0
    page = tmp_path / "review.html"
    assert runner.invoke(main, ["review", str(tmp_path / "r.csv"), "--all", "--out", str(page)]).exit_code == 0
    tiles = tiles_of(page)
    browser.get(page.as_uri())

    shown = browser.find_elements(By.CSS_SELECTOR, ".tile.field")
    assert len(shown) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, ".pieces img")) == sum(len(t["digits"]) for t in tiles)
    browser.switch_to.active_element.send_keys("1", "2", "9", Keys.BACKSPACE, "3")  # tile 0: 123, the 9 erased
    assert browser.switch_to.active_element == shown[0] and "answer 123" in shown[0].text
    browser.switch_to.active_element.send_keys(Keys.ENTER)  # done: on to tile 1
    browser.switch_to.active_element.send_keys(Keys.ENTER)  # tile 1: nothing typed, the reading is right
    browser.switch_to.active_element.send_keys("x")         # tile 2: no digits
    assert "no digits" in shown[2].text
    browser.find_element(By.ID, "download").click()
    expected = (f"path,label\n{tiles[0]['file']},123\n{tiles[1]['file']},{tiles[1]['text']}\n"
                f"{tiles[2]['file']},none\n")
    assert downloaded(tmp_path / "downloads" / "corrections.csv") == expected
    assert script_errors(browser) == []
