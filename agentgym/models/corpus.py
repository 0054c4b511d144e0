"""Synthetic text for training the tiny tokenizer.

The tokenizer only needs merges that make chat turns, tool-call JSON, code and numbers compact; the text is
generated from a fixed seed so every build produces the same vocabulary.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

WORDS = (
    "the a an of to in and or is are was were be been it this that these those for with on at by from as "
    "what which who when where why how can could would should will may might must do does did done not no yes "
    "please thanks hello hi sorry sure okay answer question result value number total sum difference product "
    "ratio average count list item items file files line lines code function call tool tools argument arguments "
    "name names query search find get set compute calculate run execute check verify return returns output input "
    "error errors message messages user assistant system response request weather city temperature today tomorrow "
    "time date year month day hour minute second price cost money order book books data table row column key keys "
    "first second third last next previous step steps plan think reason because therefore so then now here there "
    "python bash shell script program print import def class self lambda true false none null string int float "
    "add subtract multiply divide equals plus minus times square root power modulo prime even odd integer decimal "
    "word words letter letters text sentence paragraph document page title author story game move board player "
    "score win lose draw test tests pass fail passed failed correct incorrect right wrong final i you we they he "
    "she me my your our their its all some any each every many much more most less least few one two three four "
    "five six seven eight nine ten hundred thousand million need want like know see use make take give tell ask "
    "let us try again done finished start stop open close read write save load create delete update move copy "
    "path directory folder json yaml config option options default parameter parameters type object array"
).split()

TOOL_NAMES = (
    "calculator", "code_interpreter", "python", "search", "get_weather", "lookup", "read_file", "write_file",
    "run_shell", "get_time", "convert_units", "web_search", "sql_query", "make_move", "submit_answer",
)

CODE_SNIPPETS = (
    "def solve(n):\n    total = 0\n    for i in range(n):\n        total += i * i\n    return total\n\nprint(solve(10))",
    "import math\nprint(math.sqrt(144) + math.pi)",
    "x = [3, 1, 2]\nx.sort()\nprint(x)",
    "for i in range(5):\n    if i % 2 == 0:\n        print(i)",
    "#!/bin/bash\nfor f in *.txt; do\n  wc -l \"$f\"\ndone",
    "class Counter:\n    def __init__(self):\n        self.n = 0\n\n    def add(self, k=1):\n        self.n += k\n        return self.n",
    "with open('data.json') as fh:\n    data = json.load(fh)\nprint(len(data))",
    "result = sum(int(c) for c in str(2 ** 100))\nprint(result)",
    "SELECT name, COUNT(*) FROM orders GROUP BY name ORDER BY 2 DESC;",
    "echo 'hello world' | tr a-z A-Z",
)


SYLLABLES = (
    "ka ri to mu sen lo va pe ni shi dor an el ur ix bo za ter mon qui lu fa gre sta pli cro nu ve dra "
    "hol gin ort sul be ma tri pon ces lar vid rum ek is op ath en ul"
).split()


def _pseudo_words(seed: int, count: int = 1500) -> tuple[str, ...]:
    """Made-up names and words, so the vocabulary learns subword pieces and not only the fixed word list."""
    rng = random.Random(seed)
    return tuple("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(count))


PSEUDO_WORDS = _pseudo_words(7)


def _word(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(WORDS)
    word = PSEUDO_WORDS[int(len(PSEUDO_WORDS) * rng.random() ** 2)]
    return word.capitalize() if rng.random() < 0.2 else word


def _sentence(rng: random.Random, lo: int = 4, hi: int = 18) -> str:
    words = [_word(rng) for _ in range(rng.randint(lo, hi))]
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", "?", "!", ".", ":"])


def _number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        return str(rng.randint(0, 10_000))
    if kind < 0.8:
        return f"{rng.uniform(-1000, 1000):.{rng.randint(1, 4)}f}"
    return str(rng.randint(-(10**9), 10**9))


def _arguments(rng: random.Random) -> dict:
    args: dict = {}
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(("expression", "code", "query", "city", "path", "x", "y", "unit", "n", "text", "move"))
        choice = rng.random()
        if key == "code":
            args[key] = rng.choice(CODE_SNIPPETS)
        elif key == "expression":
            args[key] = f"{_number(rng)} {rng.choice('+-*/')} {_number(rng)}"
        elif choice < 0.4:
            args[key] = _number(rng)
        elif choice < 0.6:
            args[key] = float(_number(rng))
        else:
            args[key] = " ".join(_word(rng) for _ in range(rng.randint(1, 4)))
    return args


def _tool_schema(rng: random.Random, name: str) -> dict:
    props = {
        key: {"type": rng.choice(["string", "number", "integer"]), "description": _sentence(rng, 3, 8)}
        for key in rng.sample(["expression", "code", "query", "city", "x", "y", "unit"], rng.randint(1, 3))
    }
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": _sentence(rng, 5, 12),
            "parameters": {"type": "object", "properties": props, "required": list(props)[:1]},
        },
    }


def _conversation(rng: random.Random) -> str:
    parts = ["<|im_start|>system\n" + _sentence(rng)]
    if rng.random() < 0.6:
        tools = [_tool_schema(rng, name) for name in rng.sample(TOOL_NAMES, rng.randint(1, 3))]
        parts.append("\n\n# Tools\n\n" + _sentence(rng) + "\n<tools>")
        parts.extend("\n" + json.dumps(tool) for tool in tools)
        parts.append('\n</tools>\n\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
    parts.append("<|im_end|>\n")
    for _ in range(rng.randint(1, 4)):
        parts.append("<|im_start|>user\n" + " ".join(_sentence(rng) for _ in range(rng.randint(1, 3))))
        if rng.random() < 0.3:
            parts.append(" " + _number(rng) + " " + rng.choice("+-*/") + " " + _number(rng) + " = ?")
        parts.append("<|im_end|>\n<|im_start|>assistant\n")
        if rng.random() < 0.5:
            call = {"name": rng.choice(TOOL_NAMES), "arguments": _arguments(rng)}
            if rng.random() < 0.4:
                parts.append(_sentence(rng) + "\n")
            parts.append("<tool_call>\n" + json.dumps(call, ensure_ascii=False) + "\n</tool_call><|im_end|>\n")
            parts.append("<|im_start|>user\n<tool_response>\n")
            parts.append(rng.choice([_number(rng), _sentence(rng), json.dumps(_arguments(rng)), "Error: " + _sentence(rng)]))
            parts.append("\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
        parts.append(" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))))
        if rng.random() < 0.3:
            parts.append("\n```python\n" + rng.choice(CODE_SNIPPETS) + "\n```")
        if rng.random() < 0.3:
            parts.append(" The answer is " + _number(rng) + ".")
        parts.append("<|im_end|>\n")
    return "".join(parts) + "<|endoftext|>"


def tokenizer_corpus(num_conversations: int = 3000, seed: int = 1234) -> Iterator[str]:
    """Yield chat-formatted documents: prose, numbers, tool schemas, tool calls, tool responses and code."""
    rng = random.Random(seed)
    for _ in range(num_conversations):
        yield _conversation(rng)
    for snippet in CODE_SNIPPETS:
        yield snippet
    yield "".join(chr(c) for c in range(32, 127))
