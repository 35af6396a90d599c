"""A real study's report.html opened in headless Chromium: no console errors, every figure loaded,
every table filled. Skipped without a browser, except where .ci/run requires one."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path

import pytest

from medfoundry.recipes import evaluate
from medfoundry.recipes.evaluate.config import StudyConfig
from tests.chromium import REQUIRE_BROWSER_ENV, Chromium, chromium_binary
from tests.evaluation.conftest import study_config, tasks_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser() -> str:
    binary = chromium_binary()
    if binary is None:
        if os.environ.get(REQUIRE_BROWSER_ENV):
            pytest.fail(f"{REQUIRE_BROWSER_ENV} is set, but chromium is missing (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return binary


def test_report_of_a_small_study_renders_in_chromium(
    browser: str, checkpoint: Path, sites_db: Path, tmp_path: Path
) -> None:
    # probes on real crops from three centers: curves, tables, the data-efficiency table and
    # cross-center heat maps
    cfg = study_config(
        tmp_path / "study", tasks_of(sites_db), checkpoint, modes=["linear", "knn"], cross_center=True
    )
    study = evaluate.run(StudyConfig.model_validate(cfg))
    with Chromium(browser) as chromium:
        page = chromium.open(study / "report.html")
    assert page.errors == []
    content = page.content
    assert content["title"].startswith("medfoundry")
    assert "sites: balanced_accuracy versus training fraction" in content["headings"]
    # every figure the file holds (the curves, the cross-center heat maps: one figure, one colour
    # scale for every encoder x mode panel) decoded to a picture
    source = _Counts()
    source.feed((study / "report.html").read_text())
    assert len(content["images"]) == source.images >= 2
    assert all(image["complete"] and image["width"] > 0 for image in content["images"]), content["images"]
    # every table shows every row the file holds, and none is empty
    assert [table["rows"] for table in content["tables"]] == source.table_rows
    assert len(source.table_rows) >= 2 and min(source.table_rows) >= 1


class _Counts(HTMLParser):
    """Images and, per table, rows with data cells, as written in the HTML file."""

    def __init__(self) -> None:
        super().__init__()
        self.images, self.table_rows, self._row_has_cells = 0, [], False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images += 1
        elif tag == "table":
            self.table_rows.append(0)
        elif tag == "tr":
            self._row_has_cells = False
        elif tag == "td" and not self._row_has_cells:
            self._row_has_cells = True
            self.table_rows[-1] += 1


def test_the_check_sees_a_broken_figure_an_error_and_an_empty_table(browser: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>t</title></head><body>"
        '<img alt="plot" src="data:image/png;base64,AAAA">'
        "<table><tr><th>encoder</th></tr></table>"
        '<script>console.error("figure missing")</script></body></html>'
    )
    with Chromium(browser) as chromium:
        report = chromium.open(page)
    assert report.content["images"] == [{"complete": True, "width": 0, "alt": "plot"}]
    assert report.content["tables"] == [{"header": 1, "rows": 0}]
    assert "console: figure missing" in report.errors
