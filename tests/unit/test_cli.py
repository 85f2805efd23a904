"""CLI dispatch: help, unknown command, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hmrflow.jobs import cli


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in cli._available_commands():
        assert name in out


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_every_listed_command_module_is_importable_when_present() -> None:
    import importlib

    for name, (module, _) in cli._available_commands().items():
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run), name


def test_console_script_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hmrflow.jobs.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "hmrflow" in proc.stdout


def test_every_benchmark_runs_as_hmrflow_bench_name() -> None:
    """Each module of jobs/bench is a target of ``hmrflow bench`` (one entry style), with its own help."""
    from pathlib import Path

    import hmrflow.jobs.bench as bench_pkg
    from hmrflow.jobs.cli.bench import TARGETS
    from hmrflow.jobs.cli.targets import available

    modules = {p.stem for p in Path(bench_pkg.__path__[0]).glob("*.py") if p.stem != "__init__"}
    assert {m.rsplit(".", 1)[1] for m in available(TARGETS).values()} == modules
    for name in TARGETS:
        with pytest.raises(SystemExit) as ex:
            cli.main(["bench", name, "--help"])
        assert ex.value.code == 0


@pytest.mark.parametrize(
    "argv",
    [["run", "x.mp4", "-o", "D"], ["batch", "IN", "-o", "D"], ["demo", "-o", "D"]],
)
def test_output_root_has_the_short_option(argv: list[str]) -> None:
    assert cli.build_parser().parse_args(argv).out == "D"
