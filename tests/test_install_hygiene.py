"""Install hygiene: triton is an optional extra with a clear error when it is missing,
pytest reports why tests were skipped, and .ci/run runs the README's two commands verbatim and leaves no
cache behind."""
import os
import shlex
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements):
    return [r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in requirements]


def test_triton_is_an_extra_not_a_dependency():
    project = _pyproject()["project"]
    assert "triton" not in _names(project["dependencies"])
    extras = project["optional-dependencies"]
    for extra in ("gpu", "triton", "test"):  # test: the kernel tests run under triton's interpreter
        assert "triton" in _names(extras[extra]), extra
    assert "ruff" in _names(extras["test"])  # .ci/run lints with it after installing the test extra


def test_triton_backend_without_triton_says_how_to_install(monkeypatch):
    from zkernels.kernels import get_ops, resolve_backend
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now raises ImportError
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("ZKERNELS_BACKEND", raising=False)
    with pytest.raises(RuntimeError, match=r"backend='triton'.*not installed.*pip install -e \"\.\[gpu\]\""):
        resolve_backend("triton", "cuda")
    with pytest.raises(RuntimeError, match=r"get_ops\('triton'\).*not installed"):
        get_ops("triton")
    monkeypatch.setenv("ZKERNELS_BACKEND", "triton")
    with pytest.raises(RuntimeError, match=r"ZKERNELS_BACKEND=triton.*not installed"):
        resolve_backend(None, "cpu")
    monkeypatch.delenv("ZKERNELS_BACKEND")
    assert resolve_backend(None, "cuda") == "torch"  # nothing asked for: the torch backend, no error


def test_zkernels_imports_and_runs_without_triton(tmp_path):
    """In a fresh interpreter where triton cannot be imported at all: the package and the torch ops work,
    and a Reranker asked for the triton backend fails with the install hint."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(textwrap.dedent("""
        import sys
        class _NoTriton:
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ImportError("triton is not installed (blocked by the test)")
        sys.meta_path.insert(0, _NoTriton())
    """))
    code = textwrap.dedent("""
        import torch, zkernels
        from zkernels.kernels import get_ops, resolve_backend
        x = torch.randn(3, 8)
        y = get_ops("torch").rms_norm(x, torch.ones(8), 1e-6)
        assert y.shape == (3, 8)
        try:
            resolve_backend("triton", "cpu")
        except RuntimeError as e:
            print("ERROR:", e)
    """)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERROR: backend='triton' asks for the Triton kernels, but the triton package is not installed" in out.stdout
    assert 'pip install -e ".[gpu]"` in the zkernels checkout' in out.stdout


def test_pytest_reports_skip_reasons(tmp_path):
    """With the project's pytest config, a plain `pytest -q` lists every skip with its reason."""
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n@pytest.mark.skip(reason='needs a planted reason 42')\ndef test_x():\n    pass\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", str(ROOT / "pyproject.toml"),
                          "-p", "no:cacheprovider", str(tmp_path / "test_skips.py")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env=dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"))  # startup: no plugins
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SKIPPED [1]" in out.stdout and "needs a planted reason 42" in out.stdout, out.stdout


def _readme_setup_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("## Set up and run"))
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("```bash"))
    end = next(i for i in range(first + 1, len(lines)) if lines[i].startswith("```"))
    return [l.split("  #")[0].strip() for l in lines[first + 1:end] if l.strip()]


def test_ci_runs_the_readme_commands_verbatim_and_cleans_its_caches(tmp_path):
    """.ci/run on a copy of the checkout, with python3, zkernels and ruff replaced by shims that log their
    argv and the caches they see, and leave cache files behind as the real tools do."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    (repo / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    (repo / "README.md").write_text((ROOT / "README.md").read_text())
    stale = [repo / "zkernels" / "__pycache__", repo / "tests" / "__pycache__", repo / ".pytest_cache"]
    for d in stale:
        d.mkdir(parents=True)
        (d / "stale.pyc").write_text("stale")
    log = tmp_path / "log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = textwrap.dedent(f"""\
        #!/usr/bin/env bash
        # logs its argv; pytest also notes whether a stale cache was still there
        printf '%s\\0' "$(basename "$0")" "$@" >> {shlex.quote(str(log))}; printf '\\n' >> {shlex.quote(str(log))}
        echo "caches $ZKERNELS_CACHE $PIP_CACHE_DIR" >> {shlex.quote(str(log))}.env
        echo "venv $(basename "$0") ${{VIRTUAL_ENV:-none}}" >> {shlex.quote(str(log))}.env
        if [ "$1 $2" = "-m venv" ]; then  # a stand-in environment whose activate script only sets VIRTUAL_ENV
            mkdir -p "$3/bin" && echo "export VIRTUAL_ENV=$3" > "$3/bin/activate"
            exit 0
        fi
        mkdir -p "$ZKERNELS_CACHE" "$PIP_CACHE_DIR" && touch "$ZKERNELS_CACHE/ckpt" "$PIP_CACHE_DIR/wheel"
        if [ "$1 $2" = "-m pytest" ]; then
            [ -e .pytest_cache/stale.pyc ] && echo STALE >> {shlex.quote(str(log))}.env
            mkdir -p .pytest_cache zkernels/__pycache__ && touch .pytest_cache/v zkernels/__pycache__/new.pyc
        fi
        exit 0
    """)
    for name in ("python3", "zkernels", "ruff"):
        (bin_dir / name).write_text(shim)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env.pop("VIRTUAL_ENV", None)  # as on CI: whatever environment runs this test is not the one .ci/run makes
    out = subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr

    ran = [rec.rstrip("\0").split("\0") for rec in log.read_text().split("\n") if rec]
    ran = [argv for argv in ran if argv[1:2] != ["-c"]]  # the torch-is-CPU check between the two
    cmd1, cmd2 = _readme_setup_commands()
    install, demo = cmd1.split(" && ")
    # a fresh virtual environment first (no system site packages), then the README's commands inside it;
    # the lint runs after the install (which brings ruff) and before the tests
    assert ran[0][:3] == ["python3", "-m", "venv"] and len(ran[0]) == 4, ran[0]
    venv = ran[0][3]
    assert ran[1:] == [shlex.split(install), shlex.split(demo), ["ruff", "check", "."], shlex.split(cmd2)]
    env_log = (tmp_path / "log.env").read_text()
    venvs = [line.split()[1:] for line in env_log.splitlines() if line.startswith("venv ")]
    assert venvs[0] == ["python3", "none"] and all(v[1] == venv for v in venvs[1:]), venvs
    assert not Path(venv).exists()  # inside the scratch folder, which goes on exit
    assert "STALE" not in env_log  # cleaned before the tests ran
    caches = {p for line in env_log.splitlines() if line.startswith("caches ") for p in line.split()[1:]}
    assert len(caches) == 2 and not any(Path(p).exists() for p in caches)  # scratch caches removed
    assert not any(d.exists() for d in stale) and not (repo / "zkernels" / "__pycache__").exists()
