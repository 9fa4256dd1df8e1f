"""A user error prints one line and exits 2; a bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scalingdown.errors import UserError, run_cli
from scalingdown.hub import HubError


def test_a_user_error_is_one_line_on_stderr_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("SCALINGDOWN_DEBUG", raising=False)

    def cli():
        raise HubError("ORG='my org' is not a valid Hub name:\n  use letters")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(cli)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: ORG='my org' is not a valid Hub name: use letters\n"


def test_debug_shows_the_traceback_and_bugs_are_not_hidden(monkeypatch):
    monkeypatch.setenv("SCALINGDOWN_DEBUG", "1")
    with pytest.raises(UserError):
        run_cli(lambda: (_ for _ in ()).throw(UserError("bad flag")))
    monkeypatch.delenv("SCALINGDOWN_DEBUG")
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 / 0)


def test_a_real_process_prints_no_traceback_for_a_user_error(tmp_path):
    code = (
        "from scalingdown.errors import run_cli, UserError\n"
        "def cli():\n    raise UserError('SIZE=bogus: run make sizes')\n"
        "run_cli(cli)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: SIZE=bogus: run make sizes"
