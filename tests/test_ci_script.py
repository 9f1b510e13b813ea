"""`.ci/run` on a machine whose `apt-get update` fails (issue 34, item 11).

Stand-ins for apt-get, id and python3 (a real failing package index cannot be arranged here):
the script runs from a copy of `.ci/` in a temporary root, so it touches nothing of this tree.
"""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _exe(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run(tmp_path: Path, install_rc: int) -> tuple[subprocess.CompletedProcess, str]:
    root = tmp_path / "repo"
    (root / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", root / ".ci" / "run")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "log"
    _exe(bin_ / "id", 'echo 0\n')
    _exe(bin_ / "apt-get", f'echo "apt-get $*" >> {log}\n'
         f'case "$1" in update) exit 100;; install) exit {install_rc};; esac\n')
    # python3 -m venv .venv makes an activate script whose pip and pytest only record their call
    _exe(bin_ / "python3", f'echo "python3 $*" >> {log}\nmkdir -p .venv/bin\n'
         f'printf \'pip() {{ echo "pip $*" >> {log}; }}\\npytest() {{ echo "pytest $*" >> {log}; }}\\n\''
         ' > .venv/bin/activate\n')
    env = {**os.environ, "PATH": f"{bin_}:/usr/bin:/bin", "CI": "true"}
    proc = subprocess.run(["bash", str(root / ".ci" / "run")], env=env, capture_output=True, text=True,
                          timeout=60)
    return proc, log.read_text() if log.exists() else ""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_failing_apt_update_does_not_stop_ci(tmp_path):
    proc, log = _run(tmp_path, install_rc=0)
    assert proc.returncode == 0, proc.stderr
    lines = log.splitlines()
    assert lines[0].startswith("apt-get update")
    assert lines[1].startswith("apt-get install") and "qemu-system-arm" in lines[1]
    assert "pip install -e .[all]" in lines and "pytest -q" in lines
    assert "apt-get update failed" in proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_failing_apt_install_stops_ci_before_the_tests(tmp_path):
    proc, log = _run(tmp_path, install_rc=100)
    assert proc.returncode != 0
    assert "pytest -q" not in log
    assert "apt-get install" in proc.stderr
