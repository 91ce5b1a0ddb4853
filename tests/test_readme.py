"""Every example in the README runs as written, and again right after (a reader runs it twice: a
session it created must not make the second run fail); those that talk to a server get a real one."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SERVER_URL = "http://localhost:8000"


def run_the_server_section() -> str:
    return README.read_text().split("## Run the server", 1)[1].split("\n## ", 1)[0]


# That section's snippet runs on the shipped model in its own test (below): on the tests' random
# model its replies run to the token limit, minutes on a busy machine.
EXAMPLES = [
    code
    for code in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    if code not in run_the_server_section()
]


def test_the_readme_has_python_examples():
    assert EXAMPLES
    assert any(SERVER_URL in code for code in EXAMPLES)


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(code, request):
    if SERVER_URL in code:
        server = request.getfixturevalue("server")  # a real titans-server process
        code = code.replace(SERVER_URL, server.url)
    for _ in ("first", "again"):
        exec(compile(code, str(README), "exec"), {})


SHELL_LINES = [
    line
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    for line in block.replace("\\\n", " ").splitlines()
    if line.startswith(("curl ", "titans "))
    and not line.startswith(("titans serve", "titans eval conversation"))
]


def test_readme_shell_examples_run(server, tmp_path):
    """The curl and ``titans`` lines run as written, all of them twice (``titans serve`` and ``titans
    eval conversation``, minutes long at 30 trials, are tested in tests/client)."""
    assert any(line.startswith("curl ") for line in SHELL_LINES)
    assert any(line.startswith("titans ") for line in SHELL_LINES)
    for name in ("book.txt", "notes.txt", "held-out.txt"):
        (tmp_path / name).write_text("It was the best of times, it was the worst of times. " * 30)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "TITANS_BASE_URL": server.url, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    for line in SHELL_LINES + SHELL_LINES:
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


def test_the_run_the_server_section_works_as_written_from_a_fresh_copy(start_server, tmp_path):
    """A new user's first minutes: a copy of the repository as the working directory, the section's
    `titans-server` line with only a free port added (the shipped default model, the embedded
    Redis under the relative ./data), its curl lines, then its openai snippet, which replies in words;
    the curl lines and the snippet twice."""
    section = run_the_server_section()
    copy = tmp_path / "titans-serve"
    files = subprocess.run(
        ["git", "ls-files"], cwd=README.parent, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((README.parent / name).read_bytes())
    (command,) = [
        line.split("#")[0].split() for line in section.splitlines() if line.startswith("titans-server")
    ]
    assert command == ["titans-server"]
    server = start_server(
        copy / "data", command=[str(Path(sys.executable).parent / "titans-server")], cwd=copy
    )
    port = server.url.rsplit(":", 1)[1]
    (copy / "book.txt").write_text("It was the best of times, it was the worst of times. " * 30)
    curls = [
        line
        for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("curl ")
    ]
    assert len(curls) >= 3
    for line in curls + curls:
        done = subprocess.run(
            [
                "bash",
                "-c",
                "set -o pipefail; " + line.split("  #")[0].replace("localhost:8000", f"localhost:{port}"),
            ],
            cwd=copy,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0 and '"error"' not in done.stdout, f"{line}\n{done.stdout}{done.stderr}"
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    for _ in ("first", "again"):
        done = subprocess.run(
            [sys.executable, "-c", snippet.replace("localhost:8000", f"localhost:{port}")],
            cwd=copy,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    # A reply in words. Issue 16 asks for "Ada"; the shipped default does not recall names yet (its
    # model card), so that is not claimed here.
    assert re.search(r"[A-Za-z]{2,}", done.stdout), done.stdout
    assert (copy / "data").is_dir()  # the relative default data dir, under the working directory
