"""The engine's decode pattern in one process: 32 sessions as 4 batches of 8 per turn, each batch
reusing its own stack of session memories (``Stacker`` keeping 4, the default) vs one stack shared
by all (keeping 1: every step restacks its batch).

The two settings alternate turn by turn in one process on the same sessions (at different
positions, ``TitansLM.decode``), so the machine's drift cancels out: the report is the median of
the paired ratios with its quartiles. Figures in ``benchmarks/README.md`` ("Kept stacks per batch").
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=16, help="paired measurements")
    args = parser.parse_args()
    import torch

    from titans_core import TitansConfig, TitansLM
    from titans_core.stacking import Stacker

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = TitansLM(TitansConfig()).eval()
    stackers = []
    for module in model.modules():
        for group in getattr(module, "_stackers", ()):
            stackers += group if isinstance(group, list) else [group]
    assert stackers and all(isinstance(s, Stacker) for s in stackers)
    generator = torch.Generator().manual_seed(1)
    sessions, batch = 32, 8
    with torch.inference_mode():
        states = []
        for i in range(sessions):
            prompt = torch.randint(0, model.config.vocab_size, (1, 20 + 7 * i), generator=generator)
            states.append(model(prompt, logits="none")[1])

        def turn() -> None:
            for start in range(0, sessions, batch):
                tokens = torch.randint(0, model.config.vocab_size, (batch,), generator=generator)
                _, states[start : start + batch] = model.decode(tokens, states[start : start + batch])

        rates: dict[int, list[float]] = {4: [], 1: []}
        for round_ in range(args.rounds):
            for kept in (4, 1) if round_ % 2 else (1, 4):
                for stacker in stackers:
                    stacker.capacity = kept
                turn()  # settles the kept stacks
                start = time.perf_counter()
                for _ in range(3):
                    turn()
                rates[kept].append(3 * sessions / (time.perf_counter() - start))
    ratios = [a / b for a, b in zip(rates[4], rates[1])]
    quartiles = statistics.quantiles(ratios, n=4)
    print(
        f"32 sessions, 4 batches of 8 per turn: kept 4 stacks {statistics.median(rates[4]):.0f} tokens/s, "
        f"kept 1 {statistics.median(rates[1]):.0f}; paired ratio {quartiles[1]:.2f}x "
        f"(quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f}, {args.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
