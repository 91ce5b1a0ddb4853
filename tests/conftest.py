import os

import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_seed(request):
    """Fresh random inputs on every run; a failure report names the seed that reproduces it."""
    seed = int.from_bytes(os.urandom(4), "little") % 2**31
    torch.manual_seed(seed)
    request.node.user_properties.append(("torch_seed", seed))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        seed = dict(item.user_properties).get("torch_seed")
        report.sections.append(("random seed", f"torch.manual_seed({seed}) reproduces this run"))
    return report
