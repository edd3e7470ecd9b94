"""The fastem command, driven as a subprocess on real files."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastem
from fastem import GaussianMixture
from fastem._io import read_data
from fastem._progress import FitProgress, choose_mode, show_progress
from fastem.cli import main
from fastem.datasets import make_mixture

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUMPY = ("--backend", "numpy")
PARQUET_HINT = 'pip install "fastem[parquet]"'  # no compilation: keeps subprocess tests fast


def _run(*args: str, cwd=None, input: str | None = None, hide: tuple[str, ...] = ()):
    """Run ``python -m fastem ARGS``; ``hide`` makes those top-level modules unimportable."""
    env = dict(os.environ)
    env.pop("FASTEM_TRACEBACK", None)
    if hide:
        shim = os.path.join(str(cwd), "_hidden_modules")
        for name in hide:
            os.makedirs(os.path.join(shim, name), exist_ok=True)
            with open(os.path.join(shim, name, "__init__.py"), "w") as f:
                f.write(f"raise ImportError('{name} is hidden by the test')\n")
        env["PYTHONPATH"] = os.pathsep.join([shim, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "fastem", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        input=input,
        env=env,
    )


def _main(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run the command in this process (faster than a subprocess: no interpreter start)."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors and --help
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def _write_csv(path, X, header=True) -> None:
    with open(path, "w") as f:
        if header:
            f.write(",".join(f"f{j}" for j in range(X.shape[1])) + "\n")
        for row in X:
            f.write(",".join("" if np.isnan(v) else repr(float(v)) for v in row) + "\n")


def _read_csv(path) -> tuple[list[str], np.ndarray]:
    lines = open(path).read().splitlines()
    return lines[0].split(","), np.array([[float(v) for v in s.split(",")] for s in lines[1:]])


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastem: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three well-separated clusters (.csv with header, .npy) and a model fitted on them."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
    X = centres[np.arange(300) % 3] + rng.standard_normal((300, 3))
    _write_csv(root / "x.csv", X)
    np.save(root / "x.npy", X)
    model = GaussianMixture(3, random_state=0, backend="numpy").fit(X)
    model.save(root / "model.npz")
    return {"root": root, "X": X, "model": model}


# ------------------------------------------------------------------------------------ demo
def test_demo_runs_and_recovers_the_mixture(tmp_path):
    # 8 features: the three drawn components barely overlap, so ~99% is reachable.
    result = _run(
        "demo",
        "--n-samples",
        "20000",
        "--n-components",
        "3",
        "--n-features",
        "8",
        "--backend",
        "numpy",
        "--no-plot",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "converged" in result.stdout and "NOT converged" not in result.stdout
    line = [s for s in result.stdout.splitlines() if s.startswith("rows assigned")][0]
    assert float(line.split()[-1].rstrip("%")) > 95.0
    assert os.listdir(tmp_path) == []  # --no-plot: no figure


def test_demo_draws_its_figure_in_the_cwd(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    result = _run("demo", "--n-samples", "3000", "--n-components", "3", *NUMPY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fastem-demo.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "fastem-demo.png" in result.stdout
    monkeypatch.chdir(tmp_path)
    result = _main(capsys, "demo", "--n-samples", "3000", "--n-features", "3", "--plot", "d.png",
                   *NUMPY)  # fmt: skip
    assert result.returncode == 0 and (tmp_path / "d.png").stat().st_size > 10_000


def test_demo_without_matplotlib_still_prints_the_summary(tmp_path):
    result = _run("demo", "--n-samples", "2000", *NUMPY, cwd=tmp_path, hide=("matplotlib",))
    assert result.returncode == 0, result.stderr
    assert "rows assigned" in result.stdout
    hint = [s for s in result.stdout.splitlines() if 'pip install "fastem[plot]"' in s]
    assert len(hint) == 1
    assert not (tmp_path / "fastem-demo.png").exists()


def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    result = _run("demo", "--n-components", "0", cwd=tmp_path)
    _assert_one_line_error(result, "--n-components must be at least 1")
    _assert_one_line_error(_main(capsys, "fit", "x.csv"), "-k/--n-components", "--help")
    _assert_one_line_error(_main(capsys, "select", "x.csv", "--k", "3-1"), "1-10")
    _assert_one_line_error(_main(capsys, "select", "x.csv", "--covariance", "full,round"), "round")
    _assert_one_line_error(_main(capsys, "fit", "x.csv", "-k", "0", "-o", "m.npz"), "at least 1")
    _assert_one_line_error(_main(capsys, "predict", "m.npz", "x.csv"), "-o/--output")


def test_version_and_help(capsys):
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.startswith("fastem ")
    result = _main(capsys, "--help")
    assert result.returncode == 0
    for command in ("fit", "predict", "select", "segment", "impute", "demo"):
        assert command in result.stdout


# ------------------------------------------------------------------------------------ fit
def test_fit_saves_a_model_and_prints_a_summary(tmp_path, files):
    out = tmp_path / "m.npz"
    result = _run(
        "fit", str(files["root"] / "x.csv"), "-k", "3", "--covariance", "diag", "--n-init", "2",
        "--seed", "1", "-o", str(out), *NUMPY,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # stderr is a pipe: no progress display
    summary = result.stdout.strip()
    assert "\n" not in summary  # one paragraph
    for fragment in ("3-component diag", "300 rows x 3 features", "converged", "BIC", str(out)):
        assert fragment in summary
    model = fastem.persistence.load(out)
    assert model.covariance_type == "diag" and model.n_init == 2 and model.random_state == 1
    refit = GaussianMixture(3, covariance_type="diag", n_init=2, random_state=1, backend="numpy")
    np.testing.assert_allclose(model.means_, refit.fit(files["X"]).means_)


def test_fit_reads_npy_and_stdin(tmp_path, files):
    result = _run(
        "fit", str(files["root"] / "x.npy"), "-k", "2", "-o", "a.npz", *NUMPY, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    csv_text = (files["root"] / "x.csv").read_text()
    result = _run("fit", "-", "-k", "2", "-o", "b.npz", *NUMPY, cwd=tmp_path, input=csv_text)
    assert result.returncode == 0, result.stderr
    a = fastem.persistence.load(tmp_path / "a.npz")
    b = fastem.persistence.load(tmp_path / "b.npz")
    np.testing.assert_allclose(a.means_, b.means_)


def test_fit_with_the_default_backend(tmp_path, files):
    # The one subprocess test on the default backend (numba where installed: may compile).
    result = _run("fit", str(files["root"] / "x.csv"), "-k", "3", "-o", "m.npz", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # --quiet
    model = fastem.persistence.load(tmp_path / "m.npz")
    assert model.backend_ in fastem.available_backends()


def test_fit_verbose_prints_one_line_per_iteration(tmp_path, files):
    result = _run(
        "fit", str(files["root"] / "x.csv"), "-k", "3", "--n-init", "2", "-o", "m.npz",
        "--verbose", *NUMPY, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    iterations = [s for s in lines if " iteration " in s]
    ends = [s for s in lines if "after" in s and "iterations" in s]
    assert len(ends) == 2  # one per restart
    assert iterations[0].startswith("restart 1/2  iteration 1/1000  lower bound ")
    assert any(s.startswith("restart 2/2") for s in iterations)
    # Iteration lines of the kept restart match its trace.
    model = fastem.persistence.load(tmp_path / "m.npz")
    assert sum(s.startswith("restart") for s in iterations) >= model.n_iter_


def _on_a_terminal(*args: str, cwd) -> tuple[int, str]:
    """Run ``python -m fastem ARGS`` with stderr on a pseudo-terminal: (status, what it showed)."""
    import pty

    main_fd, tty_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastem", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=tty_fd, text=True,
    )  # fmt: skip
    os.close(tty_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # EIO: the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.communicate(timeout=300)
    os.close(main_fd)
    return proc.returncode, b"".join(chunks).decode()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_on_a_terminal_is_one_updating_line(tmp_path, files):
    code, shown = _on_a_terminal(
        "fit", str(files["root"] / "x.csv"), "-k", "3", "-o", "m.npz", *NUMPY, cwd=tmp_path
    )
    assert code == 0
    assert "restart 1/1" in shown and "lower bound" in shown
    assert "\n" not in shown.replace("\r\n", "")  # updates in place, no new lines
    assert shown.endswith("\r")  # and erases itself at the end


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_select_progress_counts_candidates_and_shared_restarts(tmp_path, files):
    import re

    code, shown = _on_a_terminal(
        "select", str(files["root"] / "x.npy"), "--k", "1-3", "--covariance", "full,diag",
        "--n-init", "2", "--init", "kmeans", *NUMPY, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0
    counts = re.findall(r"fit (\d+)/(\d+)  restart (\d+)/(\d+)  initializing", shown)
    # Every restart's start is drawn: 3 K x 2 covariance types, 2 shared restarts each.
    assert sorted({(int(f), int(r)) for f, _, r, _ in counts}) == [
        (f, r) for f in range(1, 7) for r in (1, 2)
    ]
    assert {(t, n) for _, t, _, n in counts} == {("6", "2")}


@pytest.mark.parametrize("missing", [False, True])
def test_select_progress_lines(missing):
    # Shared restarts, each a fit with n_init=1 (with NaN too: the starts come from the
    # column-mean-filled copy). Both read "fit i/6  restart r/2".
    X = make_mixture(200, 2, 2, random_state=0)[0]
    if missing:
        X[::5, 0] = np.nan
    stream = io.StringIO()
    with show_progress("lines", stream, total_fits=99):
        fastem.select_model(X, [1, 2, 3], ["full", "diag"], n_init=2, random_state=0,
                            backend="numpy", max_iter=5, init_params="kmeans")  # fmt: skip
    ends = [line for line in stream.getvalue().splitlines() if "after" in line]
    assert [line.split("  ")[:2] for line in ends[:12]] == [
        [f"fit {f}/6", f"restart {r}/2"] for f in range(1, 7) for r in (1, 2)
    ]
    # Then the two-stage search's continuations (refine="contenders"), labelled the same way.
    assert all(re.match(r"fit [1-6]/6  restart [12]/2  ", line) for line in ends[12:])


def test_progress_listener_modes():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert choose_mode(stream=Tty()) == "bar"
    assert choose_mode(stream=io.StringIO()) == "off"
    assert choose_mode(verbose=True, stream=io.StringIO()) == "lines"
    assert choose_mode(quiet=True, verbose=True, stream=Tty()) == "off"

    stream = Tty()
    progress = FitProgress("bar", stream, total_fits=4, min_interval=0.0)
    progress("init_start", init=0, n_init=2)
    progress("iteration", init=0, n_init=2, n_iter=3, max_iter=50, lower_bound=-1.5, change=0.1)
    progress("iteration", init=0, n_init=2, n_iter=4, max_iter=50, lower_bound=-1.25, change=0.1)
    text = stream.getvalue()
    assert "\n" not in text
    assert (
        text.split("\r")[-1].rstrip()
        == "fit 1/4  restart 1/2  iteration 4/50  lower bound -1.250000"
    )
    progress.close()
    assert stream.getvalue().endswith("\r") and stream.getvalue().split("\r")[-2].strip() == ""

    stream = io.StringIO()
    with show_progress("off", stream):
        X, _ = make_mixture(200, 2, 2, random_state=0)
        GaussianMixture(2, backend="numpy").fit(X)
    assert stream.getvalue() == ""
    with show_progress("lines", stream):
        gm = GaussianMixture(2, backend="numpy").fit(X)
    lines = stream.getvalue().splitlines()
    assert len(lines) == gm.n_iter_ + 1  # one per iteration, plus the restart's end


# ------------------------------------------------------------------------------------ predict
@pytest.mark.parametrize("ext", [".csv", ".npy", ".parquet"])
def test_predict_labels_in_each_format(tmp_path, files, ext, capsys):
    if ext == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"labels{ext}"
    args = (
        "predict",
        str(files["root"] / "model.npz"),
        str(files["root"] / "x.csv"),
        "-o",
        str(out),
    )
    # The subprocess once; the other formats in-process.
    result = _run(*args, *NUMPY) if ext == ".csv" else _main(capsys, *args, *NUMPY)
    assert result.returncode == 0, result.stderr
    labels, columns = read_data(out)
    assert columns in (None, ["label"])
    np.testing.assert_array_equal(labels.ravel(), files["model"].predict(files["X"]))
    assert "rows per component" in result.stdout


def test_predict_proba_to_stdout(files):
    result = _run(
        "predict", str(files["root"] / "model.npz"), str(files["root"] / "x.npy"), "-o", "-",
        "--proba", *NUMPY,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "proba_0,proba_1,proba_2"
    proba = np.array([[float(v) for v in s.split(",")] for s in lines[1:]])
    np.testing.assert_allclose(proba, files["model"].predict_proba(files["X"]), rtol=1e-12)
    assert "rows per component" in result.stderr  # the summary stays off the data stream


# ------------------------------------------------------------------------------------ select
HAS_SELECT = hasattr(fastem, "select_model")


@pytest.mark.skipif(not HAS_SELECT, reason="fastem.select_model is not available yet")
def test_select_prints_the_table_saves_the_best_and_plots(tmp_path, files):
    pytest.importorskip("matplotlib")
    result = _run(
        "select", str(files["root"] / "x.csv"), "--k", "1-4", "--covariance", "full,diag",
        "-o", "best.npz", "--plot", "bic.png", *NUMPY, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Bayesian Information Criterion (BIC")
    assert lines[1].split() == ["full", "diag"]  # mclust's summary: a K x model grid
    assert [line.split()[0] for line in lines[2:6]] == ["1", "2", "3", "4"]
    assert "Top 3 models based on the BIC criterion:" in lines
    assert sum(f"({r})" in result.stdout for r in (1, 2, 3)) == 3
    best = fastem.persistence.load(tmp_path / "best.npz")
    assert best.n_components == 3  # three well-separated clusters
    assert (tmp_path / "bic.png").read_bytes().startswith(PNG_SIGNATURE)


# ------------------------------------------------------------------------------------ segment
def test_segment_the_sklearn_sample_image(tmp_path):
    pytest.importorskip("PIL")
    datasets = pytest.importorskip("sklearn.datasets")
    from PIL import Image

    china = datasets.load_sample_image("china.jpg")
    Image.fromarray(china).save(tmp_path / "china.png")
    result = _run(
        "segment", "china.png", "-k", "4", "-o", "seg.png", "--max-pixels", "4000", *NUMPY,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "273,280 pixels" in result.stdout and "4 colours" in result.stdout
    seg = np.asarray(Image.open(tmp_path / "seg.png"))
    assert seg.shape == china.shape and seg.dtype == np.uint8
    colours = np.unique(seg.reshape(-1, 3), axis=0)
    assert len(colours) == 4
    # Each pixel is painted with a colour close to its own on average (a real segmentation).
    assert np.abs(seg.astype(float) - china).mean() < 30

    result = _run(
        "segment", "china.png", "-k", "4", "-o", "labels.png", "--labels", "--max-pixels",
        "4000", "--covariance", "diag", *NUMPY, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    labels = np.asarray(Image.open(tmp_path / "labels.png"))
    assert labels.shape == china.shape[:2] and set(np.unique(labels)) == {0, 1, 2, 3}


def test_segment_grey_image_with_a_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    grey = np.zeros((40, 60), dtype=np.uint8)
    grey[:, 30:] = 200
    grey += np.random.default_rng(0).integers(0, 20, grey.shape, dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    result = _run("segment", "g.png", "-k", "2", "-o", "s.png", "--plot", "fig.png", *NUMPY,
                  cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    seg = np.asarray(Image.open(tmp_path / "s.png"))
    assert seg.shape == grey.shape and len(np.unique(seg)) == 2
    assert len(np.unique(seg[:, :30])) == 1 and len(np.unique(seg[:, 30:])) == 1
    assert (tmp_path / "fig.png").read_bytes().startswith(PNG_SIGNATURE)


# ------------------------------------------------------------------------------------ impute
@pytest.mark.skipif(
    not hasattr(GaussianMixture, "impute"), reason="GaussianMixture.impute is not available yet"
)
def test_impute_fills_empty_fields_and_nan(tmp_path, files):
    X = files["X"][:12].copy()
    with open(tmp_path / "holes.csv", "w") as f:
        f.write("f0,f1,f2\n")
        for i, row in enumerate(X):
            cells = [repr(float(v)) for v in row]
            if i % 3 == 0:
                cells[1] = ""  # an empty field
            if i % 4 == 1:
                cells[2] = "NaN"
            f.write(",".join(cells) + "\n")
    result = _run("impute", str(files["root"] / "model.npz"), "holes.csv", "-o", "filled.csv",
                  *NUMPY, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    header, filled = _read_csv(tmp_path / "filled.csv")
    assert header == ["f0", "f1", "f2"]
    assert filled.shape == X.shape and not np.isnan(filled).any()
    holes = np.zeros(X.shape, dtype=bool)
    holes[::3, 1] = True
    holes[1::4, 2] = True
    np.testing.assert_array_equal(filled[~holes], X[~holes])  # observed values kept exactly
    Xh = X.copy()
    Xh[holes] = np.nan
    np.testing.assert_allclose(filled, files["model"].impute(Xh))
    assert f"Replaced {holes.sum()} missing values" in result.stdout


# ------------------------------------------------------------------------------------ errors
# name -> (arguments, files the command must not create, fragments of the message). MODEL and
# DATA stand for the module's good model and data; ``bad_files`` makes the other files. The
# kinds of bad input the command promises to handle run as subprocesses, the rest in-process.
BAD_INPUTS = {
    "missing data file": (["fit", "nope.csv", "-k", "2", "-o", "m.npz"], ["m.npz"],
                          ["no such file", "nope.csv"]),
    "non-numeric column": (["fit", "text.csv", "-k", "2", "-o", "m.npz"], ["m.npz"],
                           ["column 2 ('name')", "'abc'", "line 3"]),
    "model for other features": (["predict", "MODEL", "two.csv", "-o", "l.csv"], ["l.csv"],
                                 ["3 feature(s)", "2 column(s)"]),
    "k above rows": (["fit", "two.csv", "-k", "50", "-o", "m.npz"], ["m.npz"],
                     ["-k 50", "4 rows"]),
    "unreadable image": (["segment", "broken.png", "-k", "2", "-o", "s.png"], ["s.png"],
                         ["cannot read the image", "broken.png"]),
    "unknown data extension": (["fit", "x.txt", "-k", "2", "-o", "m.npz"], ["m.npz"],
                               ["'.txt'", ".npy, .csv, .parquet"]),
    "unknown output extension": (["predict", "MODEL", "DATA", "-o", "l.json"], ["l.json"],
                                 ["'.json'"]),
}  # fmt: skip
MORE_BAD_INPUTS = {
    "k above rows (select)": (["select", "two.csv", "--k", "1-9", "-o", "m.npz"], ["m.npz"],
                              ["--k 9", "4 rows"]),
    "k above pixels": (["segment", "ok.png", "-k", "20", "-o", "s.png"], ["s.png"],
                       ["-k 20", "16 pixels"]),
    "missing image": (["segment", "nope.png", "-k", "2", "-o", "s.png"], ["s.png"],
                      ["no such image file"]),
    "unknown image extension": (["segment", "ok.png", "-k", "2", "-o", "s.xyz"], ["s.xyz"],
                                ["s.xyz"]),
    "labels in a lossy format": (["segment", "ok.png", "-k", "2", "-o", "s.jpg", "--labels"],
                                 ["s.jpg"], ["lossless"]),
    "unknown figure extension": (["segment", "ok.png", "-k", "2", "-o", "s.png", "--plot",
                                  "f.xyz"], ["s.png"], ["f.xyz"]),
    "missing model": (["predict", "nope.npz", "DATA", "-o", "l.csv"], ["l.csv"],
                      ["no such model file"]),
    "not a model": (["predict", "DATA", "DATA", "-o", "l.csv"], ["l.csv"],
                    ["cannot load", "not a fastem model file", "fastem fit -o"]),
    "a directory as model": (["predict", ".", "DATA", "-o", "l.csv"], ["l.csv"],
                             ["cannot load '.'", "directory"]),
    "not an npy file": (["fit", "fake.npy", "-k", "1", "-o", "m.npz"], ["m.npz"],
                        ["'fake.npy' is not a NumPy .npy file"]),
    "infinity": (["fit", "inf.csv", "-k", "1", "-o", "m.npz"], ["m.npz"],
                 ["1 infinite value(s)", "row 2, column 2", "mark them missing"]),
    "negative seed": (["fit", "DATA", "-k", "2", "-o", "m.npz", "--seed", "-1"], ["m.npz"],
                      ["argument --seed", "between 0 and 2**32 - 1"]),
    "same image and figure": (["segment", "ok.png", "-k", "2", "-o", "s.png", "--plot",
                               "./s.png"], ["s.png"], ["-o and --plot name the same file"]),
    "same model and figure": (["select", "two.csv", "--k", "1", "-o", "m.png", "--plot",
                               "m.png"], ["m.png"], ["-o and --plot name the same file"]),
    "output folder missing": (["fit", "DATA", "-k", "2", "-o", "no/m.npz"], [],
                              ["does not exist"]),
    "never-observed column": (["fit", "hole.csv", "-k", "1", "-o", "m.npz"], ["m.npz"],
                              ["never observed"]),
    "ragged csv": (["fit", "ragged.csv", "-k", "1", "-o", "m.npz"], ["m.npz"],
                   ["line 2 has 3 fields"]),
    "text in a headerless first row": (["fit", "textfirst.csv", "-k", "1", "-o", "m.npz"],
                                       ["m.npz"], ["column 2 holds", "'abc'", "line 1"]),
    "empty csv": (["predict", "MODEL", "empty.csv", "-o", "l.csv"], ["l.csv"], ["no data rows"]),
    "model to stdout": (["fit", "DATA", "-k", "2", "-o", "-"], [], ["model cannot go to stdout"]),
    "unknown backend": (["fit", "DATA", "-k", "2", "-o", "m.npz", "--backend", "nope"],
                        ["m.npz"], ["invalid choice"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "text.csv").write_text("id,name\n1,2\n2,abc\n")
    (root / "two.csv").write_text("1,2\n3,4\n5,6\n7,8\n")
    (root / "hole.csv").write_text("a,b\n1,\n2,\n3,\n")
    (root / "broken.png").write_bytes(PNG_SIGNATURE + b"not really a png")
    (root / "x.txt").write_text("1,2\n")
    (root / "ragged.csv").write_text("1,2\n3,4,5\n")
    (root / "textfirst.csv").write_text("1,abc\n2,3\n4,5\n6,7\n")  # no header: "1" is data
    (root / "fake.npy").write_text("1,2\n")
    (root / "inf.csv").write_text("a,b\n1,2\n3,inf\n5,6\n")
    (root / "empty.csv").write_text("\n")
    try:
        from PIL import Image
    except ImportError:
        pass
    else:
        Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(root / "ok.png")
    return root


@pytest.mark.parametrize("name", [*BAD_INPUTS, *MORE_BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    name, files, bad_files, capsys, monkeypatch
):
    args, outputs, fragments = {**BAD_INPUTS, **MORE_BAD_INPUTS}[name]
    if args[0] == "segment":
        pytest.importorskip("PIL")
    if "--plot" in args:
        pytest.importorskip("matplotlib")
    substitute = {"MODEL": str(files["root"] / "model.npz"), "DATA": str(files["root"] / "x.csv")}
    args = [substitute.get(a, a) for a in args]
    if "--backend" not in args:
        args += NUMPY
    before = set(os.listdir(bad_files))
    if name in BAD_INPUTS:
        result = _run(*args, cwd=bad_files)
    else:
        monkeypatch.chdir(bad_files)
        result = _main(capsys, *args)
    _assert_one_line_error(result, *fragments)
    assert result.stderr.count("cannot") <= 1  # says it once: no "cannot X: cannot X: ..."
    for out in outputs:
        assert not (bad_files / out).exists()
    assert set(os.listdir(bad_files)) == before  # not even a temporary file


@pytest.mark.parametrize(
    "hidden, args, fragment",
    [
        ("pyarrow", ["fit", "x.parquet", "-k", "2", "-o", "m.npz"], PARQUET_HINT),
        ("pyarrow", ["predict", "MODEL", "x.csv", "-o", "l.parquet"], PARQUET_HINT),
        ("matplotlib", ["select", "x.csv", "--k", "1-2", "-o", "m.npz", "--plot", "b.png"],
         'pip install "fastem[plot]"'),
        ("PIL", ["segment", "x.png", "-k", "2", "-o", "s.png"], "pip install pillow"),
    ],
)  # fmt: skip
def test_missing_optional_dependency(tmp_path, files, hidden, args, fragment, capsys, monkeypatch):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    (tmp_path / "x.csv").write_text((files["root"] / "x.csv").read_text())
    (tmp_path / "x.png").write_bytes(PNG_SIGNATURE)
    args = [str(files["root"] / "model.npz") if a == "MODEL" else a for a in args] + list(NUMPY)
    before = set(os.listdir(tmp_path))
    if args[0] == "fit":  # one as a subprocess, where the module is really not importable
        result = _run(*args, cwd=tmp_path, hide=(hidden,))
    else:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setitem(sys.modules, hidden, None)  # `import hidden` now fails
        result = _main(capsys, *args)
    _assert_one_line_error(result, fragment)
    assert set(os.listdir(tmp_path)) - {"_hidden_modules"} == before


def test_k_ranges_stay_ranges():
    from fastem.cli import _k_list, _k_values

    assert _k_list("1-3,2-5,9") == [range(1, 6), range(9, 10)]
    assert _k_values(_k_list("4,1-2,3"), 10, "x") == [1, 2, 3, 4]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_AS")
def test_a_huge_k_range_is_checked_against_the_rows_not_built(tmp_path, bad_files):
    import resource

    def cap_memory():  # a regression must fail here, not eat the machine's memory
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    result = subprocess.run(
        [sys.executable, "-m", "fastem", "select", str(bad_files / "two.csv"),
         "--k", "1-99999999999", "-o", "m.npz", *NUMPY],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, preexec_fn=cap_memory,
    )  # fmt: skip
    _assert_one_line_error(result, "--k 99999999999", "4 rows", "--k 4 or less")
    assert os.listdir(tmp_path) == []


def _failing_savefig(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("command", ["select", "segment"])
def test_a_failing_second_output_leaves_no_first_output(
    command, files, bad_files, tmp_path, capsys, monkeypatch
):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    if command == "select":
        args = ["select", str(files["root"] / "x.npy"), "--k", "1-2", "--covariance", "diag",
                "-o", "best.npz", "--plot", "fig.png"]  # fmt: skip
        first = "best.npz"
    else:
        pytest.importorskip("PIL")
        args = ["segment", str(bad_files / "ok.png"), "-k", "1", "-o", "s.png",
                "--plot", "fig.png"]  # fmt: skip
        first = "s.png"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Figure, "savefig", _failing_savefig)  # the figure comes second
    result = _main(capsys, *args, *NUMPY)
    _assert_one_line_error(result, "No space left on device")
    assert os.listdir(tmp_path) == []  # not the first output, nor a temporary file
    assert not (tmp_path / first).exists()
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert _main(capsys, *args, *NUMPY).returncode == 0  # and both when nothing fails
    assert sorted(os.listdir(tmp_path)) == sorted([first, "fig.png"])


def test_quiet_keeps_results_and_drops_progress_summary_and_warnings(tmp_path, files, capsys):
    data = str(files["root"] / "x.npy")
    # Not converging in one iteration warns; --quiet silences the warning and the summary.
    loud = _main(capsys, "fit", data, "-k", "3", "--max-iter", "1", "-o", str(tmp_path / "a.npz"),
                 *NUMPY)  # fmt: skip
    assert "fastem: warning:" in loud.stderr and "Fitted" in loud.stdout
    quiet = _main(capsys, "fit", data, "-k", "3", "--max-iter", "1", "-o",
                  str(tmp_path / "b.npz"), "-q", *NUMPY)  # fmt: skip
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    # select's table is its result: it stays on stdout.
    args = ("select", data, "--k", "2-3", "--covariance", "diag", "--max-iter", "1", *NUMPY)
    loud = _main(capsys, *args, "-o", str(tmp_path / "c.npz"))
    assert "fastem: warning:" in loud.stderr and "Best model saved" in loud.stdout
    quiet = _main(capsys, *args, "-o", str(tmp_path / "d.npz"), "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    table = loud.stdout.splitlines()[:-1]  # all but the summary line
    assert table[0].startswith("Bayesian Information Criterion")
    assert quiet.stdout.splitlines() == table


def test_fit_reports_the_bic_with_missing_values_too(tmp_path, files, capsys):
    X = files["X"].copy()
    X[::4, 1] = np.nan
    np.save(tmp_path / "holes.npy", X)
    result = _main(capsys, "fit", str(tmp_path / "holes.npy"), "-k", "3", "-o",
                   str(tmp_path / "m.npz"), *NUMPY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = fastem.persistence.load(tmp_path / "m.npz")
    assert "missing values" in result.stdout
    assert f"BIC {model.bic(X):.2f}." in result.stdout


def test_the_commands_choices_are_the_librarys():
    """cli.py copies these tuples (parsing must not import NumPy): keep them equal."""
    from fastem import _covariance, _init, backends, cli, selection
    from fastem._em.fixed_point import METHODS
    from fastem._em.stopping import STOPPING_RULES

    assert cli.INIT_METHODS == _init.INIT_METHODS
    assert cli.COVARIANCE_TYPES == _covariance.COVARIANCE_TYPES
    assert cli.MCLUST_MODELS == _covariance.MCLUST_MODELS == selection.ALL_MODELS
    assert cli.SKLEARN_ALIASES == _covariance.SKLEARN_ALIASES
    assert cli.ACCELERATIONS == tuple(a for a in METHODS if a is not None)
    assert cli.REFINE == selection.REFINE
    assert cli.STOPPING_RULES == STOPPING_RULES
    assert cli.FIT_DEFAULTS == selection.DEFAULT_FIT_SETTINGS
    assert cli.SELECT_INIT == selection.DEFAULT_INIT
    assert set(cli.BACKENDS) == set(backends.AUTO_ORDER)


# ------------------------------------------------------------------ mclust models, defaults
def test_covariance_names_parse_like_the_library():
    from fastem import cli, selection

    assert cli._covariance_list("all") == "all"
    for text in ("vvv,EEI,Full,DIAG", "full,VVV,spherical,vii", "EII,all", "VEV"):
        assert cli._covariance_list(text) == selection.check_covariance_types(text.split(","))
    assert cli._covariance_name("vEv") == "VEV" and cli._covariance_name("Tied") == "tied"
    for text in ("hc", "hc+emem", "k-means+++hc", "best"):
        assert cli._init_spec(text) == "+".join(selection.check_init(text))


@pytest.mark.parametrize(
    "args, message",
    [
        (("select", "--covariance", "VVV,XYZ"), "unknown covariance type 'XYZ'"),
        (("select", "--covariance", ","), "expected 'all' or a comma-separated list"),
        (("select", "--init", "hc+hc"), "invalid start 'hc+hc'"),
        (("select", "--sign", "R"), "invalid choice: 'R'"),
        (("fit", "-k", "2", "-o", "m.npz", "--covariance", "VVX"), "unknown covariance type"),
        (("fit", "-k", "2", "-o", "m.npz", "--stopping", "never"), "invalid choice"),
    ],
)
def test_bad_model_options_exit_2_with_one_line(tmp_path, files, capsys, args, message):
    command, *rest = args
    result = _main(capsys, command, str(files["root"] / "x.csv"), *rest)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_select_all_fits_the_14_models_with_the_reaching_defaults(tmp_path, files, capsys):
    result = _main(capsys, "select", str(files["root"] / "x.csv"), "--k", "2-3", "--sign",
                   "mclust", "-o", str(tmp_path / "m.npz"), *NUMPY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    grid = result.stdout.split("Top 3")[0].split()
    for name in fastem.selection.ALL_MODELS:  # every model is a column of the grid
        assert name in grid
    assert "larger is better" in result.stdout
    best = fastem.persistence.load(tmp_path / "m.npz")
    assert best.n_components == 3
    assert best.init_params in ("hc", "emem")  # the better of the two default starts
    assert (best.tol, best.stopping, best.acceleration, best.max_iter) == (
        1e-8, "aitken", "squarem", 1000,
    )  # fmt: skip


def test_fit_takes_mclust_names_and_scikit_learns_settings(tmp_path, files, capsys):
    data = str(files["root"] / "x.csv")
    result = _main(capsys, "fit", data, "-k", "3", "--covariance", "vei", "-o",
                   str(tmp_path / "a.npz"), *NUMPY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = fastem.persistence.load(tmp_path / "a.npz")
    assert model.covariance_type == "VEI" and model.acceleration == "squarem"
    result = _main(capsys, "fit", data, "-k", "3", "--acceleration", "none", "--stopping",
                   "absolute", "--tol", "1e-3", "--max-iter", "100", "-o",
                   str(tmp_path / "b.npz"), *NUMPY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = fastem.persistence.load(tmp_path / "b.npz")
    assert (model.acceleration, model.stopping, model.tol) == (None, "absolute", 1e-3)


def test_select_refine_and_qn_reach_the_library(tmp_path, files, capsys, monkeypatch):
    # --refine and --acceleration qn are passed through to select_model / the estimator.
    seen = {}
    real = fastem.select_model

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(fastem, "select_model", spy)
    data = str(files["root"] / "x.csv")
    result = _main(capsys, "select", data, "--k", "1-2", "--covariance", "VVV,EII",
                   "--refine", "all", *NUMPY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert seen["refine"] == "all" and "~" not in result.stdout
    result = _main(capsys, "select", data, "--k", "1-2", "--refine", "some", *NUMPY)
    assert result.returncode == 2 and "--refine" in result.stderr
    result = _main(capsys, "fit", data, "-k", "2", "--acceleration", "qn", "-o",
                   str(tmp_path / "q.npz"), *NUMPY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert fastem.persistence.load(tmp_path / "q.npz").acceleration == "qn"
