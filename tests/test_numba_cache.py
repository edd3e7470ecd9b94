"""Where the compiled Numba kernels are cached: never inside the installed
package (pip would leave them behind on uninstall, and the surviving folder
shadows the next install), and a second process must load, not recompile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

import fastem  # noqa: E402
from fastem.backends import _numba_cache  # noqa: E402

PACKAGE_DIR = Path(fastem.__file__).resolve().parent

# A small fit in a fresh process; prints the cache statistics of the kernel
# it ran and of a tiny helper kernel.
FIT = """
import json, numpy as np
from fastem import GaussianMixture
from fastem.backends import _numba as nb
X = np.random.default_rng(0).normal(size=(500, 3))
GaussianMixture(2, covariance_type="diag", init_params="random", max_iter=2,
                random_state=0, backend="numba").fit(X)
kernel = nb._chunks_diag  # the compiled kernel that em_pass_diag runs
print(json.dumps({"hits": sum(kernel.stats.cache_hits.values()),
                  "misses": sum(kernel.stats.cache_misses.values())}))
"""

TINY = """
import json
from fastem.backends import _numba as nb
nb._block_rows(10)
s = nb._block_rows.stats
print(json.dumps({"hits": sum(s.cache_hits.values()), "misses": sum(s.cache_misses.values())}))
"""


def _compiled_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")}


def _run(code: str, **env_overrides: str | None) -> dict:
    env = dict(os.environ)
    for name in ("NUMBA_CACHE_DIR", "FASTEM_CACHE_DIR"):
        env.pop(name, None)
    env.update({k: v for k, v in env_overrides.items() if v is not None})
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_locator_is_registered_first():
    from numba.core import caching

    assert _numba_cache.REGISTERED
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
    assert impl._locator_classes[0] is _numba_cache.FastemCacheLocator


def test_a_fit_caches_outside_the_package_and_a_second_process_loads_it(tmp_path):
    before = _compiled_files(PACKAGE_DIR)
    first = _run(FIT, FASTEM_CACHE_DIR=str(tmp_path))
    assert first["misses"] >= 1  # an empty cache: compiled
    written = _compiled_files(tmp_path)
    assert any(p.name.startswith("_numba._chunks_diag") for p in written)
    assert all(p.is_relative_to(tmp_path / "numba") for p in written)
    assert _compiled_files(PACKAGE_DIR) == before  # nothing new inside fastem/

    second = _run(FIT, FASTEM_CACHE_DIR=str(tmp_path))
    assert second == {"hits": 1, "misses": 0}  # loaded, not recompiled


def test_numba_cache_dir_set_by_the_user_wins(tmp_path):
    numba_dir, fastem_dir = tmp_path / "numba-dir", tmp_path / "fastem-dir"
    _run(TINY, NUMBA_CACHE_DIR=str(numba_dir), FASTEM_CACHE_DIR=str(fastem_dir))
    assert any(p.name.startswith("_numba._block_rows") for p in _compiled_files(numba_dir))
    assert not _compiled_files(fastem_dir)


def test_cache_directory_defaults_to_the_user_cache_folder(monkeypatch):
    monkeypatch.delenv("FASTEM_CACHE_DIR", raising=False)
    folder = _numba_cache.cache_directory()
    assert folder.name.lower() in ("fastem", "cache")  # Windows: ...\fastem\Cache
    assert "fastem" in str(folder).lower()
    assert not folder.resolve().is_relative_to(PACKAGE_DIR)
    monkeypatch.setenv("FASTEM_CACHE_DIR", "~/somewhere")
    assert _numba_cache.cache_directory() == Path("~/somewhere").expanduser()


def test_clear_cache_removes_the_folder_and_the_next_process_recompiles(tmp_path, monkeypatch):
    cache = tmp_path / "c"
    assert _run(TINY, FASTEM_CACHE_DIR=str(cache))["misses"] == 1
    assert _run(TINY, FASTEM_CACHE_DIR=str(cache)) == {"hits": 1, "misses": 0}
    monkeypatch.setenv("FASTEM_CACHE_DIR", str(cache))
    assert _numba_cache.clear_cache() == cache
    assert not cache.exists()
    assert _run(TINY, FASTEM_CACHE_DIR=str(cache))["misses"] == 1


def test_clear_cache_keeps_other_programs_files(tmp_path, monkeypatch):
    # FASTEM_CACHE_DIR=~/.cache, say: clear_cache removed the whole folder, other
    # programs' files included (the CLI had its own guard; found by R1).
    # ~/.cache/numba is also Numba's own user-wide cache, other packages' kernels in it
    # (the session 11 review): only fastem's entries there go.
    shared = tmp_path / "shared"
    backends_dir = os.path.dirname(_numba_cache.__file__)
    ours = _numba_cache._CacheLocator.get_suitable_cache_subpath(os.path.join(backends_dir, "x.py"))
    for name in (f"{ours}-int2-ool1-on1", f"{ours}-an-older-tag", "otherproj_0123abcd"):
        (shared / "numba" / name).mkdir(parents=True)
        (shared / "numba" / name / "k.nbi").write_bytes(b"0")
    (shared / "other-program").mkdir()
    (shared / "notes.txt").write_text("not fastem's")
    monkeypatch.setenv("FASTEM_CACHE_DIR", str(shared))
    assert _numba_cache.clear_cache() == shared
    assert sorted(p.name for p in (shared / "numba").iterdir()) == ["otherproj_0123abcd"]
    assert (shared / "notes.txt").read_text() == "not fastem's"
    assert (shared / "other-program").is_dir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    monkeypatch.setenv("FASTEM_CACHE_DIR", str(a_file))
    _numba_cache.clear_cache()
    assert a_file.read_text() == "x"


def test_modules_outside_fastem_keep_numbas_own_locators(tmp_path):
    """Only fastem's files are claimed: a user's own @njit(cache=True) module
    caches where Numba always put it (its __pycache__)."""
    module = tmp_path / "user_kernels.py"
    module.write_text("from numba import njit\n@njit(cache=True)\ndef f(x):\n    return x + 1\n")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "import fastem.backends._numba\n"
        "import user_kernels, json; user_kernels.f(1)\n"
        "print(json.dumps({}))\n"
    )
    _run(code, FASTEM_CACHE_DIR=str(tmp_path / "fastem-cache"))
    assert _compiled_files(tmp_path / "__pycache__")
    assert not _compiled_files(tmp_path / "fastem-cache")


def _cli(*args: str, **env_overrides: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for name in ("NUMBA_CACHE_DIR", "FASTEM_CACHE_DIR"):
        env.pop(name, None)
    env.update({k: v for k, v in env_overrides.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-m", "fastem", "cache", *args], env=env, capture_output=True, text=True
    )


def test_cache_command_shows_and_clears_the_folder(tmp_path):
    cache = tmp_path / "c"
    _run(TINY, FASTEM_CACHE_DIR=str(cache))
    shown = _cli(FASTEM_CACHE_DIR=str(cache))
    assert shown.returncode == 0, shown.stderr
    n_files = len([p for p in cache.rglob("*") if p.is_file()])
    assert shown.stdout.startswith(f"{cache}: {n_files} files")
    cleared = _cli("--clear", FASTEM_CACHE_DIR=str(cache))
    assert cleared.returncode == 0 and cleared.stdout.strip() == f"removed {cache}"
    assert not cache.exists()


def test_cache_command_leaves_numbas_own_folder_alone(tmp_path):
    numba_dir = tmp_path / "numba"
    _run(TINY, NUMBA_CACHE_DIR=str(numba_dir))
    refused = _cli("--clear", NUMBA_CACHE_DIR=str(numba_dir))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "NUMBA_CACHE_DIR is set" in refused.stderr
    assert _compiled_files(numba_dir)  # untouched


def test_show_config_names_the_cache(tmp_path, monkeypatch):
    import io

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("FASTEM_CACHE_DIR", str(tmp_path))
    out = io.StringIO()
    fastem.show_config(out)
    assert f"compiled-kernel cache: {tmp_path}" in out.getvalue()
