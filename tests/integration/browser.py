"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) through selenium, for
the tests that open ``report.html``: starting and quitting it, waiting on JavaScript conditions, the
console and network logs, pixels of an element, the pointer, the hover tooltip (in Bokeh's
shadow DOM) and full-page screenshots.

A missing browser or driver fails the tests (CI must run them): ``.ci/run`` installs them.
Nothing here sleeps: every wait is a ``WebDriverWait`` on a condition.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING_HINT = (
    "the report.html browser tests need headless Chromium and its driver ({what} not "
    "found); `.ci/run` installs them with apt-get (apt-get install chromium "
    "chromium-driver); on a workstation: sudo apt-get install chromium chromium-driver"
)
WIDTH, HEIGHT = 1280, 1000  # the window; the viewport is what the browser leaves of it
WAIT_S = 90.0  # the longest any wait on the page lasts (a shared, slow machine)
POLL_S = 0.05
SCREENSHOTS_ENV = "PIPELINE_SCREENSHOTS"
DEFAULT_SCREENSHOTS = Path("/tmp/pipeline-report-screenshots")

# The page's Bokeh document exists and every root (figure) has been rendered once.
BOKEH_IDLE = (
    "window.Bokeh !== undefined && Bokeh.documents.length === 1 && Bokeh.documents[0].is_idle"
)
# Two animation frames from now (a resize or scroll has been laid out and painted).
TWO_FRAMES = (
    "const done = arguments[arguments.length - 1];"
    "requestAnimationFrame(() => requestAnimationFrame(() => done(true)));"
)
# Every visible hover tooltip's rows, as [[label, value], ...] per hovered glyph; Bokeh
# draws them inside the figures' shadow roots.
TOOLTIPS = """
const found = [];
function walk(root) {
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) walk(el.shadowRoot);
    if (el.classList.contains('bk-tooltip-content') && el.getClientRects().length > 0) {
      const labels = el.querySelectorAll('.bk-tooltip-row-label');
      const values = el.querySelectorAll('.bk-tooltip-row-value');
      const rows = [];
      for (let i = 0; i < labels.length; i++) {
        rows.push([labels[i].textContent.trim().replace(/:$/, ''),
                   values[i] ? values[i].textContent.trim() : '']);
      }
      found.push(rows);
    }
  }
}
walk(document);
return found;
"""


def find_executable(default: Path, name: str) -> str:
    """``default`` if it is there, else ``name`` on PATH; a clear failure when neither."""
    if default.is_file() and os.access(default, os.X_OK):
        return str(default)
    found = shutil.which(name)
    if found is None:
        pytest.fail(MISSING_HINT.format(what=f"{default} / {name} on PATH"), pytrace=False)
    return found


def start_browser(*, javascript: bool = True) -> WebDriver:
    """Headless Chromium at a fixed window size, its console and performance (network)
    logs kept; with ``javascript=False`` the page's scripts never run."""
    options = webdriver.ChromeOptions()
    options.binary_location = find_executable(CHROMIUM, "chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # we run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},{HEIGHT}",
        "--force-color-profile=srgb",  # canvas colours in screenshots exactly as drawn
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    if not javascript:
        options.add_argument("--blink-settings=scriptEnabled=false")
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(
        executable_path=find_executable(CHROMEDRIVER, "chromedriver"),
        log_output=subprocess.DEVNULL,
    )
    try:
        return webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        pytest.fail(f"{MISSING_HINT.format(what='a working browser')}: {exc.msg}", pytrace=False)


@contextlib.contextmanager
def chromium(*, javascript: bool = True) -> Iterator[WebDriver]:
    """A headless Chromium (``start_browser``) for the ``with`` block, quit at its end
    (chromedriver and every browser process with it)."""
    driver = start_browser(javascript=javascript)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class PageLoad:
    """A page as it opened: its URL, its console messages and every URL it requested."""

    url: str
    console: list[dict[str, Any]]
    requests: list[str]

    def console_problems(self) -> list[dict[str, Any]]:
        """Console messages of level SEVERE (errors, uncaught exceptions) or WARNING."""
        return [e for e in self.console if e.get("level") in ("SEVERE", "WARNING")]

    def foreign_requests(self) -> list[str]:
        """Requests for anything but the page itself and ``data:`` URLs."""
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]


def drain_logs(driver: WebDriver) -> None:
    """Empty the console and performance logs (chromedriver hands each entry out once)."""
    driver.get_log("browser")
    driver.get_log("performance")


def requested_urls(driver: WebDriver) -> list[str]:
    """The URLs of ``Network.requestWillBeSent`` in the performance log since last read."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def wait_for(driver: WebDriver, condition: str, what: str, timeout: float = WAIT_S) -> Any:
    """The first truthy value of the JavaScript expression ``condition``; fails with the
    console's messages if there is none within ``timeout`` s."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=POLL_S).until(
            lambda d: d.execute_script(f"return ({condition});")
        )
    except TimeoutException:
        console = driver.get_log("browser")
        pytest.fail(f"{what}: not so within {timeout:g} s; browser console: {console}")


def open_page(driver: WebDriver, path: Path, *, charts: bool = True) -> PageLoad:
    """Open ``path`` and wait until it is loaded and, with ``charts``, until Bokeh has
    rendered every chart; what it logged and requested meanwhile."""
    drain_logs(driver)
    url = path.resolve().as_uri()
    driver.get(url)
    wait_for(driver, "document.readyState === 'complete'", f"{path} loaded")
    if charts:
        wait_for(driver, BOKEH_IDLE, f"{path}: Bokeh rendered every chart")
    return PageLoad(url, driver.get_log("browser"), requested_urls(driver))


def after_frames(driver: WebDriver) -> None:
    """Return once the page has laid out and painted twice more."""
    driver.set_script_timeout(WAIT_S)
    driver.execute_async_script(TWO_FRAMES)


def bokeh(driver: WebDriver, body: str, *args: Any) -> Any:
    """Run ``body`` (JavaScript with ``return``) with ``doc`` the page's Bokeh document
    and ``model(name)`` its model of that name (an error when there is none)."""
    prelude = (
        "const doc = Bokeh.documents[0];"
        "const model = (name) => { const m = doc.get_model_by_name(name);"
        " if (m === null) { throw new Error('no Bokeh model ' + name); } return m; };"
    )
    return driver.execute_script(prelude + body, *args)


def timeline_boxes(driver: WebDriver) -> dict[str, Any]:
    """Where the timeline's bars are drawn, in CSS pixels from the top-left of its element
    ``#chart-timeline``: ``boxes`` [[left, right, top, bottom], ...] in the data source's
    order, ``frame`` [left, top, width, height] (the plot area: no legend, no axes),
    ``dpr`` the device pixel ratio. Computed with the figure's own scales."""
    return bokeh(
        driver,
        """
        const fig = model('timeline');
        const bars = model('timeline-bars');
        const source = bars.data_source;
        const view = Bokeh.index.find_one(fig);
        const host = document.getElementById('chart-timeline').getBoundingClientRect();
        const canvas = view.canvas_view.el.getBoundingClientRect();
        const dx = canvas.left - host.left, dy = canvas.top - host.top;
        const xs = view.frame.x_scale, ys = view.frame.y_scale;
        const half = bars.glyph.height.value / 2;
        const boxes = [];
        for (let i = 0; i < source.get_length(); i++) {
          const y = fig.y_range.synthetic(source.data.worker[i]);
          boxes.push([dx + xs.compute(source.data.start[i]), dx + xs.compute(source.data.end[i]),
                      dy + ys.compute(y + half), dy + ys.compute(y - half)]);
        }
        const f = view.frame.bbox;
        return {boxes: boxes, frame: [dx + f.left, dy + f.top, f.width, f.height],
                dpr: window.devicePixelRatio};
        """,
    )


def scroll_to(driver: WebDriver, element_id: str) -> None:
    """Scroll the element to the top of the viewport (it must fit in it)."""
    fits = driver.execute_script(
        "const el = document.getElementById(arguments[0]);"
        "el.scrollIntoView({block: 'start', inline: 'nearest', behavior: 'instant'});"
        "const r = el.getBoundingClientRect();"
        "return r.top >= 0 && r.bottom <= window.innerHeight;",
        element_id,
    )
    assert fits, f"#{element_id} does not fit in the viewport"
    after_frames(driver)


def element_image(driver: WebDriver, element_id: str) -> Image.Image:
    """The element as drawn (scrolled into view first: screenshots clip to the viewport)."""
    scroll_to(driver, element_id)
    element = driver.find_element(By.ID, element_id)
    image = Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")
    width, height, dpr = driver.execute_script(
        "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
        "return [r.width, r.height, window.devicePixelRatio];",
        element_id,
    )
    assert abs(image.height - height * dpr) <= 2, (image.size, width, height, dpr)
    return image


def viewport_point(driver: WebDriver, element_id: str, x: float, y: float) -> tuple[int, int]:
    """The viewport coordinates of the point ``(x, y)`` of the element."""
    left, top = driver.execute_script(
        "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
        "return [r.left, r.top];",
        element_id,
    )
    return round(left + x), round(top + y)


def move_pointer(driver: WebDriver, x: int, y: int) -> None:
    """Move the mouse to the viewport point ``(x, y)``."""
    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(x, y)
    actions.perform()


def hover_tooltips(driver: WebDriver, x: int, y: int, expect: str) -> list[dict[str, str]]:
    """Hover the viewport point ``(x, y)`` and return the visible tooltips (one per
    hovered glyph, each {label: value}) once one of them shows the text ``expect``."""
    move_pointer(driver, 1, 1)  # off every chart: the next move is a fresh hover
    move_pointer(driver, x, y)
    found = wait_for(
        driver,
        f"(function () {{ const t = (function () {{ {TOOLTIPS} }})();"
        f" return JSON.stringify(t).includes({json.dumps(expect)}) ? t : null; }})()",
        f"a tooltip showing {expect!r} at ({x}, {y})",
    )
    return [dict((label, value) for label, value in rows) for rows in found]


def colour_share(image: Image.Image, box: tuple[int, int, int, int], rgb: tuple[int, ...]) -> float:
    """The share of the pixels of ``box`` (left, top, right, bottom) that are ``rgb``
    (each channel within 3)."""
    data = image.crop(box).convert("RGB").tobytes()  # any Pillow: r, g, b, r, g, b, ...
    pixels = [data[i : i + 3] for i in range(0, len(data), 3)]
    close = sum(1 for p in pixels if all(abs(a - b) <= 3 for a, b in zip(p, rgb, strict=True)))
    return close / max(1, len(pixels))


def hex_rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def screenshot_dir() -> Path:
    """``$PIPELINE_SCREENSHOTS``, else /tmp/pipeline-report-screenshots (never the repo)."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or DEFAULT_SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_full_page(driver: WebDriver, name: str, *, javascript: bool = True) -> Path:
    """A screenshot of the whole page (the window made as tall as the page), then the
    window back to its usual size. Prints the file's path (shown by ``pytest -s``).
    ``javascript=False`` for a browser that runs no page script (no animation frame comes:
    nothing is drawn by script either)."""
    chrome = driver.execute_script("return window.outerHeight - window.innerHeight;")
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);"
    )
    driver.set_window_size(WIDTH, height + chrome)
    try:
        wait_for(driver, f"window.innerHeight >= {height}", "the window resized")
        if javascript:
            after_frames(driver)  # the charts laid out again and painted
        path = screenshot_dir() / f"{name}.png"
        assert driver.save_screenshot(str(path)), path
    finally:
        driver.set_window_size(WIDTH, HEIGHT)
        wait_for(driver, f"window.outerHeight === {HEIGHT}", "the window restored")
    print(f"screenshot: {path}")
    return path
