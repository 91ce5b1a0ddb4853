"""How often a model answers everyday prompts in real English words, per sampling setting.

Starts a real ``titans-server`` on loopback and asks it 50 everyday prompts through the stock
``openai`` SDK, once per setting: ``sdk-default`` sends no sampling field at all (the model's
``generation_config.json`` decides), the others send their values explicitly. A reply counts as
words when it has at least two words and every word is in the word list (``/usr/share/dict/words``,
Debian's ``wamerican``). This chose the shipped default's ``generation_config.json`` (see its model
card)::

    python scripts/sampling_words.py --model default --seeds 3
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers import Server  # noqa: E402  (the tests' way of starting a real server)

PROMPTS = [
    "Hello!", "Hi there, how are you?", "Good morning.", "How was your day?", "What are you doing?",
    "Can you help me?", "Tell me something nice.", "What is your name?", "Who are you?",
    "Thank you very much.", "I am tired today.", "I had a long day at work.", "It is raining here.",
    "The weather is lovely today.", "I like to read books.", "Do you like music?", "I am hungry.",
    "What should I eat for dinner?", "I went for a walk this morning.", "My dog is sleeping.",
    "I have a cat.", "Tell me a story.", "Say something.", "What do you think?", "Are you there?",
    "I feel happy.", "I feel sad today.", "Good night.", "See you tomorrow.", "Goodbye.",
    "How old are you?", "Where do you live?", "What time is it?", "I need some advice.",
    "Can you remember things?", "My name is Anna.", "I live in Paris.", "My favourite colour is blue.",
    "I am learning to cook.", "I just moved to a new house.", "It is my birthday today.",
    "I love the sea.", "The train was late again.", "I am going on holiday.", "What is love?",
    "Please be kind.", "Do you know any poems?", "I like your answers.", "Let us talk.", "Nice to meet you.",
]  # fmt: skip
SETTINGS: dict[str, dict] = {
    "sdk-default": {},
    "greedy": {"temperature": 0},
    "temperature=0.2": {"temperature": 0.2},
    "temperature=0.3": {"temperature": 0.3},
    "temperature=0.3,top_p=0.8": {"temperature": 0.3, "top_p": 0.8},
    "temperature=0.3,top_k=20": {"temperature": 0.3, "top_k": 20},
    "temperature=0.5": {"temperature": 0.5},
    "temperature=0.5,top_p=0.9": {"temperature": 0.5, "top_p": 0.9},
    "temperature=0.7": {"temperature": 0.7},
    "temperature=0.7,top_p=0.9": {"temperature": 0.7, "top_p": 0.9},
    "temperature=1.0": {"temperature": 1.0},
}
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def words_of(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def in_words(text: str, vocabulary: set[str]) -> bool:
    """At least two words, every one in ``vocabulary`` (a possessive's ``'s`` is read past)."""
    found = [w.removesuffix("'s") for w in words_of(text)]
    return len(found) >= 2 and all(w in vocabulary for w in found)


def load_words(path: Path) -> set[str]:
    return {line.strip().lower() for line in path.read_text(errors="ignore").splitlines() if line.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--seeds", type=int, default=1, help="runs per setting (seeds 0, 1, ...)")
    parser.add_argument("--words", type=Path, default=Path("/usr/share/dict/words"))
    parser.add_argument("--setting", action="append", help="only these settings (names above)")
    parser.add_argument("--show", type=int, default=3, help="replies printed per setting")
    args = parser.parse_args()
    vocabulary = load_words(args.words)
    chosen = {name: SETTINGS[name] for name in (args.setting or SETTINGS)}
    with tempfile.TemporaryDirectory() as scratch:
        server = Server(Path(scratch) / "data", "--model", args.model).start(timeout=120)
        try:
            client = OpenAI(base_url=server.url + "/v1", api_key="unused")
            for name, fields in chosen.items():
                good = total = 0
                shown = []
                for seed in range(args.seeds):
                    for prompt in PROMPTS:
                        messages = [{"role": "user", "content": prompt}]
                        seeded = {"seed": seed} if args.seeds > 1 or fields else {}
                        openai_fields = {k: v for k, v in fields.items() if k != "top_k"}
                        extra = {"extra_body": {"top_k": fields["top_k"]}} if "top_k" in fields else {}
                        reply = client.chat.completions.create(
                            model="default", messages=messages, **openai_fields, **seeded, **extra
                        )
                        text = reply.choices[0].message.content or ""
                        good += in_words(text, vocabulary)
                        total += 1
                        if len(shown) < args.show:
                            shown.append(f"    {prompt!r} -> {text!r}")
                print(f"{name:28s} {good}/{total} = {good / total:.0%} replies in real words", flush=True)
                print("\n".join(shown), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
