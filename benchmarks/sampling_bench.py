"""Sampling one token: ``titans_core.generation.sample`` vs the textbook form it replaced (a full
sort for top-p, ``torch.multinomial`` for the draw), on the shipped default's logits (4,096 tokens
of vocabulary) over 1,600 positions of a passkey prompt and a repeated line.

The two alternate in one process, so the machine's drift cancels out: the report is the median
time of each and the median of the paired ratios. Figures in ``benchmarks/README.md`` ("Sampling").
"""

from __future__ import annotations

import argparse
import statistics
import time


def textbook(logits, params, generator):
    """Temperature, top-k, top-p by sorting the whole vocabulary, and a multinomial draw."""
    import torch

    logits = logits.float() / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = logits.topk(params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        probabilities = ordered.softmax(dim=-1)
        drop = (probabilities.cumsum(dim=-1) - probabilities) >= params.top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10, help="paired measurements")
    args = parser.parse_args()
    import torch

    from titans_core import SamplingParams, TitansLM
    from titans_core.generation import sample

    torch.set_num_threads(2)
    model = TitansLM.from_pretrained("default").eval()
    text = "The passkey is 48213. Remember it. " + "Now is the winter of our discontent. " * 120
    with torch.inference_mode():
        logits = model(torch.tensor([model.tokenizer.encode(text)[:1700]]))[0][0, 100:]
    generator = torch.Generator().manual_seed(0)
    settings = {
        "temperature 1": SamplingParams(),
        "top_p 0.9": SamplingParams(top_p=0.9),
        "top_k 40, top_p 0.95": SamplingParams(top_k=40, top_p=0.95),
    }
    for batch in (1, 8):
        for label, params in settings.items():
            times: dict[str, list[float]] = {"sample": [], "textbook": []}
            for round_ in range(args.rounds):
                pair = (("sample", sample), ("textbook", textbook))
                for name, fn in pair if round_ % 2 else pair[::-1]:
                    start = time.perf_counter()
                    for i in range(200):
                        fn(logits[i * batch : (i + 1) * batch], params, generator)
                    times[name].append((time.perf_counter() - start) / 200 * 1e6)
            ratio = statistics.median(a / b for a, b in zip(times["textbook"], times["sample"]))
            print(
                f"batch {batch}, {label}: sample {statistics.median(times['sample']):.0f} us, "
                f"textbook {statistics.median(times['textbook']):.0f} us; paired ratio {ratio:.1f}x"
            )


if __name__ == "__main__":
    main()
