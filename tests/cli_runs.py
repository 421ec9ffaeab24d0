"""Running ``hf-cotmi`` commands in-process from tests, and reading their one-line errors."""

from __future__ import annotations

from hf_cotmi.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``hf_cotmi.cli.main(argv)``: its exit status, standard output and standard error."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, command: str) -> str:
    """The single ``hf-cotmi <command>: error: ...`` line a usage or data error prints, without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hf-cotmi {command}: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]
