#!/usr/bin/env python3
"""bench/stdlib/csv_gen.py PATH MB: writes a deterministic CSV of about MB
megabytes: a header and rows of 8 fields, two of them quoted (one with a
comma, one with doubled quotes), UTF-8 text, LF line ends."""
import random
import sys

random.seed(42)
target = int(sys.argv[2]) * 1000 * 1000
words = ["alpha", "beta", "gamma", "delta", "sluice", "river", "data", "pipe", "north", "south", "Ünïcode"]
with open(sys.argv[1], "w", newline="", encoding="utf-8") as f:
    f.write("id,name,email,city,amount,created_at,note,active\n")
    size, i = 0, 0
    while size < target:
        i += 1
        line = '%d,"%s, %s",user%d@example.com,%s,%.2f,2026-%02d-%02dT12:00:00Z,"%s ""%s"" %s",%s\n' % (
            i, random.choice(words).title(), random.choice(words).title(), i, random.choice(words),
            random.random() * 1000, random.randint(1, 12), random.randint(1, 28),
            random.choice(words), random.choice(words), random.choice(words),
            random.choice(["true", "false"]))
        f.write(line)
        size += len(line.encode())
