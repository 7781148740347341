"""optuna-dashboard on a real study: one fold-score chart per study (replaced, not added, after
every trial), the note, and the page as a real browser renders it."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from ablate.study.runner import RunArgs, run
from ablate.study.storage import open_storage
from conftest import TINY_SPACE, spaces_folder

TITLE = "Fold scores per arm"


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Iterator[tuple[str, int]]:
    """A finished three-arm study, served by optuna-dashboard's WSGI app on a port bound before
    the test goes on (no waiting for a server to come up)."""
    import optuna_dashboard

    from ablate.study.dashboard import artifact_store

    d = spaces_folder(tmp_path_factory.mktemp("dash"), tiny=TINY_SPACE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLATE_SPACES", str(d))
        mp.setenv("ABLATE_HOME", str(d / "home"))
        storage = str(d / "s.journal")
        study = run(RunArgs("tiny", preset="smoke", data=str(synth_cache), storage=storage))
        app = optuna_dashboard.wsgi(open_storage(storage), artifact_store=artifact_store())
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", open_storage(storage).get_study_id_from_name(study.study_name)
    finally:
        server.shutdown()


def test_one_chart_and_the_note_after_several_trials(served: tuple[str, int]) -> None:
    base, study_id = served
    with urllib.request.urlopen(f"{base}/api/studies/{study_id}", timeout=60) as r:
        detail = json.loads(r.read())
    graphs = detail["plotly_graph_objects"]
    assert len(graphs) == 1, [g["id"] for g in graphs]  # three trials, one chart, the latest
    figure = json.loads(graphs[0]["graph_object"])
    assert TITLE in figure["layout"]["title"]["text"] and len(figure["data"]) == 5  # one line per fold
    assert "| ce |" in detail["note"]["body"] and "| focal |" in detail["note"]["body"]


def test_the_study_page_shows_one_chart_in_a_browser(served: tuple[str, int], tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        pytest.skip("no headless Chromium installed (apt-get install chromium; .ci/run installs it)")
    base, study_id = served
    run_ = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=20000", "--dump-dom", f"{base}/dashboard/studies/{study_id}"],
                          capture_output=True, text=True, timeout=180)
    dom = run_.stdout
    assert "tiny-smoke" in dom, run_.stderr[-2000:]
    drawn = dom.count(f'data-unformatted="{TITLE}')  # plotly's title element, one per drawn chart
    assert drawn == 1, f"{drawn} copies of the chart on the page"
