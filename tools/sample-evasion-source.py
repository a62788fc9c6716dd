#!/usr/bin/env python3
"""Writes tests/data/evasion-source.jsonl: toxic rows from the validation fifth that
`chatguard train` holds out (same split hash as src/engine/train.rs), chat-length, a fixed
number per dataset. The evasion test makes obfuscated copies of them.

usage: python3 tools/sample-evasion-source.py [../shared/data/train]
"""
import json, sys, pathlib

M = (1 << 64) - 1

def is_validation(text: str) -> bool:
    h = 0x243F6A8885A308D3
    for b in text.encode():
        h ^= b
        h = (h * 0x100000001B3) & M
    h ^= h >> 29
    h = (h * 0xBF58476D1CE4E5B9) & M
    h ^= h >> 32
    return h % 5 == 4

def toxic(source, labels):
    if source == "jigsaw-toxic-train":
        return any(labels.get(k) == 1 for k in ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"))
    if source == "davidson-tweets":
        return labels.get("class") in ("hate", "offensive")
    if source == "tweeteval-offensive":
        return labels.get("offensive") == 1
    if source == "hatexplain":
        return labels.get("toxic") == 1
    return False

PER_SET = 80
data = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/train")
out = []
for name in ("jigsaw-toxic-train", "davidson-tweets", "tweeteval-offensive", "hatexplain"):
    rows = []
    for line in open(data / f"{name}.jsonl", encoding="utf-8"):
        r = json.loads(line)
        t = r["text"]
        if toxic(name, r["labels"]) and is_validation(t) and 10 <= len(t) <= 200:
            rows.append(t)
    rows.sort()
    step = max(1, len(rows) // PER_SET)
    for t in rows[::step][:PER_SET]:
        out.append({"text": t, "source": name})
dest = pathlib.Path(__file__).resolve().parent.parent / "tests/data/evasion-source.jsonl"
with open(dest, "w", encoding="utf-8") as f:
    for r in out:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(f"wrote {len(out)} rows to {dest}")
