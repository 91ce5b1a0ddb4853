"""Every Python example in the README runs as written; those that talk to a server get a real one."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
SERVER_URL = "http://localhost:8000"


def test_the_readme_has_python_examples():
    assert EXAMPLES
    assert any(SERVER_URL in code for code in EXAMPLES)


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(code, request):
    if SERVER_URL in code:
        server = request.getfixturevalue("server")  # a real titans-server process
        code = code.replace(SERVER_URL, server.url)
    exec(compile(code, str(README), "exec"), {})


SHELL_LINES = [
    line
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    for line in block.replace("\\\n", " ").splitlines()
    if line.startswith(("curl ", "titans ")) and not line.startswith("titans serve")
]


def test_readme_shell_examples_run(server, tmp_path):
    """The curl and ``titans`` lines run as written (``titans serve`` is tested in tests/client)."""
    assert any(line.startswith("curl ") for line in SHELL_LINES)
    assert any(line.startswith("titans ") for line in SHELL_LINES)
    for name in ("book.txt", "notes.txt", "held-out.txt"):
        (tmp_path / name).write_text("It was the best of times, it was the worst of times. " * 30)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "TITANS_BASE_URL": server.url, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    for line in SHELL_LINES:
        command = line.replace("localhost:8000", server.url.removeprefix("http://"))
        done = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command}"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        if line.startswith("curl "):
            assert '"error"' not in done.stdout, f"{line}\n{done.stdout}"
