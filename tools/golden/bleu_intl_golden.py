#!/usr/bin/python3
"""Golden outputs of sacreBLEU's intl tokenizer for clinic's BLEU tests.

Uses the exact substitutions of sacrebleu/tokenizers/tokenizer_intl.py with
Debian's python3-regex (sacreBLEU itself is not packaged):
    /usr/bin/python3 tools/golden/bleu_intl_golden.py > test/data/bleu_intl_golden.tsv
Each output line: input <TAB> tokenized.
"""
import regex

RULES = [
    (regex.compile(r'(\P{N})(\p{P})'), r'\1 \2 '),
    (regex.compile(r'(\p{P})(\P{N})'), r' \1 \2'),
    (regex.compile(r'(\p{S})'), r' \1 '),
]

LINES = [
    "Hello, world!",
    "It costs 3.50 dollars, e.g. 1,000.",
    "Der Preis beträgt 1.234,56 € (inkl. MwSt.).",
    "« Bonjour » — dit-il… «Salut»!",
    "The year 2019. Then 2020!",
    "a+b=c; x<y>z | 50% off #1 @home ~ok",
    "中文，标点。测试！",
    "Ich hab’s „so“ gesagt: ‚gut‘.",
    "emoji 😀 and ♥ and © 2024",
    "well...done--yes?!",
    "x²+y³ ½ ٣٤ test",
    "tab\tseparated\u00a0nbsp words",
]

for line in LINES:
    out = line
    for r, repl in RULES:
        out = r.sub(repl, out)
    print(line.replace("\t", "\\t") + "\t" + " ".join(out.split()))
