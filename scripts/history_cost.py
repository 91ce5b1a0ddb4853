"""What kept versions cost (issue 30): a session's state bytes at every position of a segment, and
the most N kept versions of it take. A state's size depends only on where its position falls in the
open segment (its cache and start memory), never on the session's length.

    python scripts/history_cost.py [MODEL] [--versions N]
"""

from __future__ import annotations

import argparse

import torch

from titans_core import TitansLM
from titans_core.state import to_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="default")
    parser.add_argument("--versions", type=int, default=4, help="kept versions per session")
    args = parser.parse_args()
    model = TitansLM.from_pretrained(args.model).eval()
    segment = model.config.segment_size
    sizes = {}
    with torch.no_grad():
        for position in range(segment, 2 * segment + 1):  # one whole segment, past the first
            ids = torch.randint(0, model.config.vocab_size, (1, position))
            sizes[position] = len(to_bytes(model(ids, state=model.initial_state(1))[1]))
    low, high = min(sizes.values()), max(sizes.values())
    print(f"{args.model}: a state is {low:,}-{high:,} bytes (positions {segment}-{2 * segment})")
    print(f"{args.versions} kept versions: at most {args.versions * high:,} bytes per session")


if __name__ == "__main__":
    main()
