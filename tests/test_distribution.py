"""The wheel, installed on its own: one import name (`pricer`), every module in it, nothing generic in site-packages."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"pricer": "pricer", "app": "pricer.app", "evaluator": "pricer.evaluator", "trainer": "pricer.trainer"}
SCRIPT = """
import importlib, json, pkgutil, sys
from pathlib import Path
from pricer import PricerCallback
import app, evaluator, pricer, trainer
assert (app.WHO, evaluator.WHO, trainer.WHO) == ("user-app", "user-evaluator", "user-trainer"), "the user's own modules"
assert Path(pricer.__file__).is_relative_to(sys.argv[1]), f"pricer from {pricer.__file__}, not the fresh venv"
names = ["pricer"] + [info.name for info in pkgutil.walk_packages(pricer.__path__, "pricer.")]
for name in names:
    importlib.import_module(name)
from pricer.evaluator.store import Store
from pricer.evaluator.store.migrate import head, revision
assert revision(Store("sqlite://").engine) == head(), "the migrations ship in the wheel and run"
print(json.dumps(names))
"""


def test_the_wheel_installs_alone_under_one_name(tmp_path):
    source = tmp_path / "source"  # a clean copy: no stale build/ of the checkout can end up in the wheel
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path / "dist")], check=True)
    wheel = next((tmp_path / "dist").glob("pricer-*.whl"))
    shipped = zipfile.ZipFile(wheel).namelist()
    assert "pricer/evaluator/views/templates/dashboard.html" in shipped
    assert "pricer/evaluator/store/migrations/env.py" in shipped and "pricer/evaluator/store/migrations/versions/0002_leases.py" in shipped

    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env)
    site = next((env / "lib").glob("python*/site-packages"))
    (site / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")  # the dependencies; its own .pth files are not run
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    assert not {"app", "evaluator", "trainer"} & {p.name.removesuffix(".py") for p in site.iterdir()}

    user = tmp_path / "user"  # a user's project, with modules of those generic names of its own
    (user / "app").mkdir(parents=True)
    (user / "app" / "__init__.py").write_text('WHO = "user-app"\n')
    (user / "trainer.py").write_text('WHO = "user-trainer"\n')
    (user / "evaluator.py").write_text('WHO = "user-evaluator"\n')
    (user / "check.py").write_text(SCRIPT)
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    done = subprocess.run([str(env / "bin" / "python"), "check.py", str(site)], cwd=user, env=clean, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]

    expected = set()  # every module of the checkout, by its installed name
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # scripts Alembic runs, shipped as data: checked above
            parts = [*package.split("."), *path.relative_to(ROOT / folder).with_suffix("").parts]
            expected.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    missing = expected - set(json.loads(done.stdout.splitlines()[-1]))
    assert not missing, f"not in the wheel (add the package to pyproject's [tool.setuptools] packages): {sorted(missing)}"
