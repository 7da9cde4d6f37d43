"""Regenerate instructions.jsonl, the bundled demo SFT corpus (deterministic, from templates).

Run: python -m rlhf.training.data.build_corpus
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris",
    "Spain": "Madrid",
    "Italy": "Rome",
    "Germany": "Berlin",
    "Japan": "Tokyo",
    "Canada": "Ottawa",
    "Egypt": "Cairo",
    "Peru": "Lima",
    "Kenya": "Nairobi",
    "Norway": "Oslo",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Chile": "Santiago",
}
COLORS = {
    "the sky": "blue",
    "grass": "green",
    "snow": "white",
    "a banana": "yellow",
    "a tomato": "red",
    "coal": "black",
    "an orange": "orange",
    "a plum": "purple",
}
ANIMALS = {
    "cat": "meows",
    "dog": "barks",
    "cow": "moos",
    "duck": "quacks",
    "lion": "roars",
    "horse": "neighs",
    "sheep": "bleats",
    "owl": "hoots",
}
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "happy": "sad",
    "light": "dark",
    "old": "new",
    "up": "down",
    "open": "closed",
    "early": "late",
    "full": "empty",
}
TIPS = {
    "sleep better": "Keep a regular bedtime, avoid screens late at night and keep the room cool.",
    "learn faster": "Study in short sessions, test yourself often and sleep well.",
    "stay focused": "Remove distractions, set one clear goal and take short breaks.",
    "save money": "Track what you spend, set a budget and save a little every week.",
    "write clearly": "Use short sentences, plain words and one idea per paragraph.",
    "stay healthy": "Eat vegetables, move every day and drink enough water.",
    "be on time": "Plan the route, leave early and set a reminder.",
    "make friends": "Be curious, listen well and show up for people.",
}
NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
]


def build(seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []

    def add(tag: str, instruction: str, answer: str) -> None:
        rows.append({"tag": tag, "instruction": instruction, "answer": answer})

    for country, city in CAPITALS.items():
        add("geography", f"What is the capital of {country}?", f"The capital of {country} is {city}.")
        add("geography", f"Which city is the capital of {country}?", f"{city} is the capital of {country}.")
    for thing, color in COLORS.items():
        add("facts", f"What color is {thing}?", f"{thing[0].upper() + thing[1:]} is {color}.")
    for animal, sound in ANIMALS.items():
        add("facts", f"What sound does a {animal} make?", f"A {animal} {sound}.")
    for word, opposite in OPPOSITES.items():
        add("language", f"What is the opposite of {word}?", f"The opposite of {word} is {opposite}.")
        add("language", f"Give me the opposite of the word {word}.", f"The opposite of {word} is {opposite}.")
    for goal, tip in TIPS.items():
        add("advice", f"How can I {goal}?", tip)
        add("advice", f"Give me a tip to {goal}.", tip)
    pairs = [(a, b) for a in range(10) for b in range(10)]
    rng.shuffle(pairs)
    for a, b in pairs[:90]:
        add("math", f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.")
    for a, b in pairs[90:100] + pairs[:40]:
        if a >= b:
            add("math", f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}.")
    for n in range(1, 19):
        add("math", f"Write the number {n} in words.", f"The number {n} is written {NUMBER_WORDS[n]}.")
    for n in range(2, 12):
        add("math", f"What is double {n}?", f"Double {n} is {2 * n}.")
    words = ["apple", "river", "garden", "music", "window", "planet", "pencil", "bridge", "cloud"]
    for w in words:
        add("language", f"Spell the word {w} backwards.", f"{w} backwards is {w[::-1]}.")
        add("language", f"How many letters are in the word {w}?", f"The word {w} has {len(w)} letters.")
        add("language", f"Write the word {w} in capital letters.", f"{w.upper()}.")
    greetings = ["Hello!", "Hi there!", "Good morning!", "Hey, how are you?"]
    for g in greetings:
        add("chat", g, "Hello! How can I help you today?")
    add("chat", "Thank you!", "You are welcome. Happy to help.")
    add("chat", "Who are you?", "I am a small assistant trained to answer simple questions.")
    rng.shuffle(rows)
    return rows


def main() -> None:
    path = Path(__file__).with_name("instructions.jsonl")
    rows = build()
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
