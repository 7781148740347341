"""Write study reports to a folder: <study>.html, <study>.json (the same numbers), plotly.min.js and index.html.

The folder works offline and can be copied as a whole: pages load plotly.min.js by a relative path.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna

from ablate.files import atomic_write
from ablate.report.analysis import analyze
from ablate.report.charts import study_charts
from ablate.report.html import PLOTLY_JS, render_index, render_report

PACKAGES = ("ablate", "torch", "optuna", "scipy", "numpy", "plotly")
_RESERVED = ("index", "final", "plotly.min")  # the names of the folder's other pages


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python and the versions of the packages the numbers depend on."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    """Short commit of the checkout the ablate package runs from, '-dirty' with uncommitted changes
    (new files count: .gitignore keeps studies and reports out); 'unknown' when it is not run from a
    git checkout (e.g. installed from a wheel)."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        # a package installed inside some other repository (a venv in a project) is not that repository
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return "unknown"
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _finite(v: Any) -> Any:
    """nan and inf as None, recursively: JSON has neither."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def report_json(study: optuna.Study, alpha: float = 0.05, rope: tuple[float, float] | None = None) -> dict[str, Any]:
    """`analyze` plus the versions and commit that made it; strict JSON (no nan)."""
    return _finite(analyze(study, alpha=alpha, rope=rope) | {"versions": versions(), "commit": git_commit()})


def report_stem(study_name: str) -> str:
    """The file name (without suffix) of a study's report: the study name itself when it is a safe
    file name, else with odd characters as '_' plus a digest of the real name, so that two names
    ("exp 1", "exp_1") never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study"
    if safe == study_name and safe not in _RESERVED:
        return safe
    return f"{safe}-{hashlib.blake2b(study_name.encode(), digest_size=3).hexdigest()}"


def write_plotly_js(out_dir: Path) -> Path:
    """plotly.min.js from the installed plotly package, written once (rewritten if it differs)."""
    from plotly.offline import get_plotlyjs

    path = out_dir / PLOTLY_JS
    js = get_plotlyjs()
    if not path.is_file() or path.read_text(encoding="utf-8") != js:
        atomic_write(path, js)
    return path


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_report(study: optuna.Study, out_dir: Path, alpha: float = 0.05,
                 rope: tuple[float, float] | None = None) -> Path:
    """Write <study>.html and <study>.json into out_dir (and plotly.min.js once); returns the HTML path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    a = report_json(study, alpha, rope)
    stem = report_stem(study.study_name)
    write_plotly_js(out_dir)
    atomic_write(out_dir / f"{stem}.json", json.dumps(a, indent=1, allow_nan=False) + "\n")
    html_path = out_dir / f"{stem}.html"
    atomic_write(html_path, render_report(a, study_charts(a, study), _now(), quote(f"{stem}.json")))
    return html_path


def load_reports(out_dir: Path) -> list[dict[str, Any]]:
    """The report dicts written into out_dir (the <study>.json beside each <study>.html)."""
    found = []
    for path in sorted(Path(out_dir).glob("*.json")):
        try:
            a = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(a, dict) and {"study", "arms"} <= set(a) and path.with_suffix(".html").is_file():
            found.append(a)
    return found


def write_index(out_dir: Path, entries: list[dict[str, Any]] | None = None) -> Path:
    """Write out_dir/index.html linking each study's report; entries are report dicts, by default
    every report in out_dir (so the index never drops a study that another run reported)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = load_reports(out_dir) if entries is None else entries
    links = [(quote(f"{report_stem(a['study'])}.html"), a) for a in sorted(reports, key=lambda a: str(a["study"]))]
    path = out_dir / "index.html"
    final = "final.html" if (out_dir / "final.html").is_file() else None  # written by `ablate finalize`
    atomic_write(path, render_index(links, _now(), final))
    return path
