"""Every Python example in the README runs as written; those that talk to a server get a real one."""

import re
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
