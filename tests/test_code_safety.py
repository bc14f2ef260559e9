"""Safety rules that hold across the repository (issue 5): safe YAML, no shell strings, quoted recipe paths."""

import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PYTHON_SOURCES = sorted(
    p for folder in ("espnet_amortized", "local", "egs") for p in (REPO / folder).rglob("*.py")
)
SHELL_SCRIPTS = ["run.sh", "path.sh", "cmd.sh", ".ci/run", *sorted(
    str(p.relative_to(REPO)) for pattern in ("egs/*/*.sh", "local/*.sh") for p in REPO.glob(pattern)
)]


@pytest.mark.parametrize(
    "pattern,why",
    [
        (r"yaml\.(load|unsafe_load|full_load)\(", "read YAML with yaml.safe_load"),
        (r"Loader\s*=\s*yaml\.(Loader|UnsafeLoader|FullLoader)", "read YAML with yaml.safe_load"),
        (r"shell\s*=\s*True", "pass argument lists, never a shell string with user paths"),
        (r"os\.system\(|os\.popen\(", "use subprocess with an argument list"),
    ],
)
def test_python_sources_avoid(pattern, why):
    offenders = [f"{path.relative_to(REPO)}:{number}" for path in PYTHON_SOURCES
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if re.search(pattern, line)]
    assert PYTHON_SOURCES and not offenders, f"{why}: {offenders}"


def test_shell_scripts_pass_shellcheck_with_every_variable_quoted():
    """shellcheck at 'info' level flags every unquoted expansion (SC2086); deliberate word lists say why inline."""
    shellcheck = pathlib.Path(sys.executable).parent / "shellcheck"
    result = subprocess.run([str(shellcheck), "-S", "info", "-x", *SHELL_SCRIPTS], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert len(SHELL_SCRIPTS) >= 6
