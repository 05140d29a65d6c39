"""`nanotui demo`: a first look without a network.

A small corpus of simple stories in the style of TinyStories, from templates
(deterministic for a seed, a few hundred KB), a demo experiments file whose `quick`
sweep trains two tiny models on it on the CPU, and a runs directory beside them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Lily", "Tom", "Mia", "Ben", "Sue", "Max", "Anna", "Sam", "Lucy", "Tim", "Zoe", "Jack"]
ANIMALS = ["dog", "cat", "bird", "bunny", "duck", "frog", "fox", "bear", "fish", "mouse"]
ADJ = ["little", "happy", "big", "small", "kind", "shy", "brave", "silly", "sleepy", "red"]
PLACES = ["park", "garden", "forest", "beach", "house", "farm", "pond", "hill", "school", "town"]
THINGS = ["ball", "kite", "box", "hat", "cake", "book", "boat", "toy car", "flower", "apple"]
FEELINGS = ["happy", "sad", "scared", "excited", "tired", "proud", "surprised", "angry"]
ACTIONS = ["play", "run", "jump", "dance", "sing", "swim", "climb", "hide", "read", "paint"]
WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "cloudy"]

OPENINGS = [
    "Once upon a time, there was a {adj} {animal} named {name}.",
    "One {weather} day, {name} went to the {place}.",
    "Once upon a time, in a {adj} {place}, there lived a {animal}.",
    "{name} was a {adj} girl who loved to {action}.",
    "{name} was a {adj} boy who had a {thing}.",
]
MIDDLES = [
    "{name} saw a {adj2} {animal2} near the {place}.",
    "The {animal} wanted to {action} with the {thing}.",
    "{name} found a {thing} under a tree.",
    "It was {weather}, so {name} felt {feeling}.",
    "\"Can I {action} with you?\" asked the {animal2}.",
    "\"Yes, you can!\" said {name} with a big smile.",
    "{name} and the {animal2} went to the {place2} together.",
    "Then the {thing} fell into the water, and {name} was {feeling}.",
    "{name}'s mom said, \"Be careful, {name}. Share your {thing}.\"",
    "They liked to {action} and {action2} all day long.",
    "Suddenly, a {adj2} wind took the {thing} up into the sky.",
]
ENDINGS = [
    "In the end, {name} and the {animal2} became best friends.",
    "{name} learned that sharing makes everyone {feeling2}.",
    "They went home, and {name} slept well that night.",
    "From that day on, {name} always took care of the {thing}.",
    "The {animal2} said thank you, and they were both very happy.",
]


def story(rng: random.Random) -> str:
    w = {
        "name": rng.choice(NAMES), "animal": rng.choice(ANIMALS), "adj": rng.choice(ADJ),
        "place": rng.choice(PLACES), "thing": rng.choice(THINGS),
        "feeling": rng.choice(FEELINGS), "action": rng.choice(ACTIONS),
        "weather": rng.choice(WEATHER), "animal2": rng.choice(ANIMALS),
        "adj2": rng.choice(ADJ), "place2": rng.choice(PLACES),
        "action2": rng.choice(ACTIONS), "feeling2": rng.choice(["happy", "glad", "warm"]),
    }
    parts = [rng.choice(OPENINGS)]
    parts += rng.sample(MIDDLES, rng.randint(3, 6))
    parts.append(rng.choice(ENDINGS))
    return " ".join(p.format(**w) for p in parts)


def corpus(n_bytes: int = 300_000, seed: int = 1337) -> str:
    """Stories separated by blank lines until about n_bytes of text."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_bytes:
        s = story(rng)
        out.append(s)
        size += len(s) + 2
    return "\n\n".join(out) + "\n"


DEMO_EXPERIMENTS = """\
# The nanotui demo: tiny models on generated stories (stories.txt), on the CPU.
# Edit it and run `nanotui --experiments {exp} plan`, or open the TUI.
[defaults]
dataset = {data}
tokenizer = "char"
n_layer = 2
n_head = 4
n_embd = 64
block_size = 64
batch_size = 16
dropout = 0.0
learning_rate = 1e-3
max_iters = 300
lr_decay_iters = 300
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 20
eval_interval = 50
eval_iters = 20
log_interval = 10

[sampling]
prompts = ["Once upon a time"]
max_new_tokens = 200
temperature = 0.8
top_k = 200

[launch]
max_cpu_runs = 1

[sweep.quick]
description = "Two tiny models: a minute or two on a laptop CPU"
vary = {{ n_layer = [1, 2] }}

# More to try: `nanotui launch width` after uncommenting.
# [sweep.width]
# fixed = {{ n_layer = 2, n_head = 4 }}
# vary = {{ n_embd = [32, 64, 128] }}
"""


def write_demo(directory: str | Path, seed: int = 1337, n_bytes: int = 300_000) -> Path:
    """Write stories.txt and experiments.toml into `directory` (kept when they exist,
    so a second demo reuses the first's runs); returns the experiments file."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = d / "stories.txt"
    if not data.exists():
        data.write_text(corpus(n_bytes, seed), encoding="utf-8")
    exp = d / "experiments.toml"
    if not exp.exists():
        exp.write_text(DEMO_EXPERIMENTS.format(data=json.dumps(str(data.resolve())), exp=exp), encoding="utf-8")
    return exp
