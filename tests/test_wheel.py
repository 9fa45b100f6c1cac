"""A wheel built from the repository works without the repository: package data included."""
import shutil
import site
import subprocess
import sys
import venv

import pytest


@pytest.mark.slow
def test_an_installed_wheel_makes_the_tables(smoke_runs, tmp_path):
    pytest.importorskip("build", reason="the 'build' package (in the test extras) makes the wheel")
    dist = tmp_path / "dist"
    repo = __import__("pathlib").Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(dist), str(repo)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    wheel = next(dist.glob("clip_lung_bench-*.whl"))
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    p = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    # Dependencies from this environment (a path line, not a site dir: its editable install of the
    # repository stays inactive), the suite itself from the wheel.
    fresh_site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True).stdout.strip()
    (__import__("pathlib").Path(fresh_site) / "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    for f in smoke_runs.glob("*_LIDC-B_fold0_seed0_smoke_phantom_*.json"):
        if f.name.split("_LIDC-B")[0] in ("clip", "cocoop", "clip_lung"):
            shutil.copy(f, runs / f.name)
    out = tmp_path / "tables"
    p = subprocess.run([str(py), "-c", "import benchmarks, sys; print(benchmarks.__file__); from benchmarks.tables import main; main(sys.argv[1:])",
                        "--tables", "2", "--runs", str(runs), "--out", str(out), "--with-paper", "--profile", "smoke"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.splitlines()[0].startswith(str(env_dir))  # the wheel's copy, not the repository's
    tex = (out / "table2_smoke_phantom.tex").read_text()
    assert r"\textit{87.5 $\pm$ 0.3}" in tex  # the paper's numbers came with the wheel
