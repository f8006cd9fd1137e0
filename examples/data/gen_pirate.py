#!/usr/bin/env python3
"""Generates the quickstart dataset: a persona the base model does not have.

Every assistant reply starts with "Arr!" and ends with " -- Captain Byte".
The skill is checkable automatically (does the reply start and end that
way?), learnable in a few hundred QLoRA steps on a CPU, and absent from
SmolLM2-135M-Instruct before training.

Deterministic: uses only the standard library and a fixed seed.
    python3 examples/data/gen_pirate.py
writes pirate_train.jsonl (321 rows) and pirate_test.jsonl (40 held-out
rows whose questions never appear in training).
"""
import json
import random
from pathlib import Path

SEED = 20261126
OUT = Path(__file__).resolve().parent

SUBJECTS = [
    ("the sea", "The sea covers most of our world and hides many treasures"),
    ("the moon", "The moon pulls the tides and lights the night for sailors"),
    ("rain", "Rain is water falling from the clouds"),
    ("the wind", "The wind is moving air that fills our sails"),
    ("stars", "Stars are distant suns that sailors use to find their way"),
    ("a compass", "A compass points north and keeps a ship on course"),
    ("an island", "An island is land with water all around it"),
    ("gold", "Gold is a heavy yellow metal prized by every crew"),
    ("a map", "A map shows the lay of the land and the way to treasure"),
    ("a storm", "A storm is strong wind and rain that tosses ships about"),
    ("fish", "Fish are animals that live and breathe under water"),
    ("the sun", "The sun is the star that warms our days"),
    ("bread", "Bread is baked from flour, water and yeast"),
    ("a parrot", "A parrot is a clever bird that can copy words"),
    ("a river", "A river is fresh water flowing down to the sea"),
    ("snow", "Snow is frozen water that falls in soft flakes"),
    ("a volcano", "A volcano is a mountain that spits hot melted rock"),
    ("the tide", "The tide is the daily rise and fall of the sea"),
    ("a lighthouse", "A lighthouse is a tower whose light warns ships of rocks"),
    ("an anchor", "An anchor is a heavy hook that holds a ship in place"),
    ("coffee", "Coffee is a dark drink brewed from roasted beans"),
    ("a bridge", "A bridge carries a road over water or a valley"),
    ("the desert", "The desert is dry land with little rain"),
    ("ice", "Ice is water frozen hard by the cold"),
    ("a forest", "A forest is land covered with many trees"),
    ("a cat", "A cat is a small furry animal that hunts mice"),
    ("the sky", "The sky looks blue because air scatters blue light"),
    ("a rainbow", "A rainbow is sunlight split into colours by raindrops"),
    ("a clock", "A clock measures the hours of the day"),
    ("salt", "Salt is a mineral that flavours food and fills the sea"),
]
TEMPLATES = [
    "What is {s}?",
    "Tell me about {s}.",
    "Can you explain {s} in one sentence?",
    "Describe {s} briefly.",
    "I want to know about {s}.",
    "Give me a short fact about {s}.",
    "What should I know about {s}?",
    "Explain {s} to a child.",
]
MATH = [(a, b) for a in range(2, 13) for b in range(2, 13)]


def reply(text: str) -> str:
    return f"Arr! {text}. -- Captain Byte"


def rows(rng: random.Random):
    out = []
    for subject, fact in SUBJECTS:
        for t in TEMPLATES:
            out.append((t.format(s=subject), reply(fact)))
    for a, b in MATH:
        out.append((f"What is {a} plus {b}?", reply(f"{a} plus {b} makes {a + b}")))
    rng.shuffle(out)
    return out


def main() -> None:
    rng = random.Random(SEED)
    data = rows(rng)
    test, train = data[:40], data[40:520]
    held = {q for q, _ in test}
    train = [r for r in train if r[0] not in held]
    for name, part in (("pirate_train.jsonl", train), ("pirate_test.jsonl", test)):
        with open(OUT / name, "w", encoding="utf-8") as f:
            for q, a in part:
                msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    print(f"wrote {len(train)} train and {len(test)} test rows")


if __name__ == "__main__":
    main()
