"""What the hostile-input tests share: run a command as a user would, and check that it failed the
one way every command fails (exit status 2, one `error:` line, no traceback)."""

from pathlib import Path

from typer.testing import CliRunner

from melanoma.cli import app

RUNNER = CliRunner()


def cli(*args: object) -> tuple[int, str]:
    """Run `melanoma ARGS`: its exit status and its output on one line (a traceback fails the test)."""
    result = RUNNER.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a failure of its own
    return result.exit_code, " ".join(result.output.split())


def refused(code: int, output: str, *expected: str) -> None:
    """Exit status 2 and one line `error: ...` holding each expected text; no traceback."""
    assert code == 2, output
    assert output.count("error:") == 1 and "Traceback" not in output, output
    for text in expected:
        assert text in output[output.index("error:") :], output


def digest(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock files (they record who last held a fold: runtime state)."""
    return {
        str(p): p.read_bytes()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".lock"))
    }
