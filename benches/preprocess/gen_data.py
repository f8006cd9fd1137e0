#!/usr/bin/env python3
"""Writes the preprocessing benchmark's input: N multi-turn chat conversations
(jsonl, OpenAI `messages` shape), deterministic, standard library only.
    python3 benches/preprocess/gen_data.py /tmp/ft-bench/chats.jsonl 20000
"""
import json
import random
import sys

WORDS = ("sea moon rain wind star compass island gold map storm fish sun bread parrot river snow "
         "volcano tide lighthouse anchor coffee bridge desert ice forest cat sky rainbow clock salt").split()


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    rng = random.Random(7)
    with open(out, "w", encoding="utf-8") as f:
        for _ in range(n):
            msgs = []
            if rng.random() < 0.3:
                msgs.append({"role": "system", "content": sentence(rng, 8)})
            for _ in range(rng.randint(1, 3)):
                msgs.append({"role": "user", "content": sentence(rng, rng.randint(5, 25)) + "?"})
                msgs.append({"role": "assistant", "content": " ".join(sentence(rng, rng.randint(5, 15)) for _ in range(rng.randint(1, 4)))})
            f.write(json.dumps({"messages": msgs}) + "\n")


if __name__ == "__main__":
    main()
