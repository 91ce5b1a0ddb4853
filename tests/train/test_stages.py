"""Curriculum stages: gates that open on accuracy or end at their cap, the gates' own learning
rate, and a stage run that continues where it was cut off."""

from __future__ import annotations

import json

import torch

from tests.train.conftest import tiny_options
from titans_core import TitansLM
from titans_core.train.loop import _Gate
from titans_core.train.optim import GateRate, make_optimizer
from titans_core.train.stages import RECORD_FILE, Stage, run_stages


def test_a_gate_opens_after_enough_reports_in_a_row():
    gate = _Gate(0.9, 2)
    assert [gate.passes(x) for x in (0.95, 0.5, 0.91, None, 0.92)] == [False] * 5
    assert gate.passes(0.93) and gate.open
    assert not _Gate(None, 1).passes(1.0)  # no gate: never opens


def test_the_gate_rows_learn_at_their_own_rate(corpus, tmp_path):
    def one_step(scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = TitansLM.from_pretrained("tiny-random")
        memory = model.layers[0].memory
        before = memory.to_inputs.weight.detach().clone()
        optimizer = make_optimizer(model, tiny_options(corpus, tmp_path))
        model(torch.randint(0, 200, (2, 40)))[0].square().mean().backward()
        GateRate(model, scale).step(optimizer)
        return before, memory.to_inputs.weight.detach() - before

    before, base = one_step(1.0)
    _, scaled = one_step(5.0)
    rows = TitansLM.from_pretrained("tiny-random").layers[0].memory.gate_rows()
    assert base[rows].abs().sum() > 0
    torch.testing.assert_close(scaled[rows], 5 * base[rows])
    torch.testing.assert_close(scaled[: rows.start], base[: rows.start])  # q, k, v rows as before


def stage_options(corpus, tmp_path) -> dict:
    options = tiny_options(corpus, tmp_path).to_dict()
    for name in ("data", "out", "init", "resume"):
        options.pop(name)
    return options | {"steps": 3, "eval_sequences": 0, "eval_recall": 0}


def test_stages_chain_record_their_gates_and_continue_after_a_cut(corpus, tmp_path):
    common = stage_options(corpus, tmp_path)
    stages = [
        Stage(
            "first", {"recall_kinds": ["drill"], "min_distance": 0, "max_distance": 30, "gate_accuracy": 1.0}
        ),
        Stage("second", {"stop_after": 2}),  # cut off after 2 of its 3 steps, as a signal would
    ]
    records = run_stages(stages, [str(corpus)], tmp_path / "run", common)
    assert records[0]["finished"] and records[0]["step"] == 3 and records[0]["gate_open"] is False
    assert records[1] == {"stage": "second", "finished": False, "step": 2}
    second = json.loads((tmp_path / "run" / "second" / "options.json").read_text())
    assert second["init"] == records[0]["export"]  # started from the first stage's export
    first_log = (tmp_path / "run" / "first" / "metrics.jsonl").read_text()

    stages[1] = Stage("second", {"stop_after": None})
    records = run_stages(stages, [str(corpus)], tmp_path / "run", common)
    assert (tmp_path / "run" / "first" / "metrics.jsonl").read_text() == first_log  # not run again
    assert records[1]["finished"] and records[1]["step"] == 3 and records[1]["gate_open"] is None
    assert json.loads((tmp_path / "run" / RECORD_FILE).read_text()) == records
