"""verl's layouts, reproduced for tests: the rows its gsm8k "multiturn w/ tool" preprocessing writes, its tool and
interaction YAML, and the import-line port of a verl tool or interaction.

The row builder is ours, written to produce the same columns and nesting as verl's
examples/data_preprocess/gsm8k_multiturn_w_tool.py (January 2026), fed hand-written questions instead of the
dataset: `interaction_kwargs` carries `query` and `ground_truth` and no `name`; `tools_kwargs` names the tool
`calc_gsm8k_reward` with the ground truth in `create_kwargs`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent

# (question, worked solution ending in "#### answer"), written for these tests.
QUESTIONS = [
    ("A baker fills 4 trays with 6 rolls each and sells 9 rolls. How many rolls are left?",
     "4 trays of 6 make 4*6=24 rolls. 24-9=15 are left.\n#### 15"),
    ("Maya reads 12 pages a day for 5 days, then 7 more pages. How many pages did she read?",
     "12*5=60 pages, plus 7 is 67.\n#### 67"),
    ("A bus carries 38 people; 11 get off and 5 get on. How many are on the bus now?",
     "38-11=27, then 27+5=32.\n#### 32"),
    ("Three boxes hold 125 nails each. A builder uses 1,040 of 1,375 nails in stock plus the boxes. How many remain?",
     "The boxes hold 3*125=375, so there are 1,375+375=1,750 nails. 1,750-1,040=710 remain.\n#### 710"),
]

STEP_BY_STEP = "Let's think step by step and output the final answer after `####`."
SYSTEM = (
    "You solve math word problems. Think step by step before calling a tool. Call the `calc_gsm8k_reward` tool with "
    "your answer at least once before you give the final answer, and correct it if needed. End with `#### <answer>`."
)


def final_number(solution: str) -> str:
    match = re.search(r"#### (-?[0-9.,]+)", solution)
    assert match is not None, solution
    return match.group(1).replace(",", "")


def gsm8k_multiturn_tool_row(question: str, solution: str, index: int, split: str = "train") -> dict:
    """One row in the layout verl's gsm8k multiturn-with-tool preprocessing writes."""
    truth = final_number(solution)
    asked = f"{question} {STEP_BY_STEP}"
    return {
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": asked}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": truth},
        "extra_info": {
            "split": split,
            "index": index,
            "answer": solution,
            "question": question,
            "need_tools_kwargs": True,
            "tools_kwargs": {"calc_gsm8k_reward": {"create_kwargs": {"ground_truth": truth}}},
            "interaction_kwargs": {"query": asked, "ground_truth": truth},
        },
    }


def verl_rows(split: str = "train") -> list[dict]:
    return [gsm8k_multiturn_tool_row(q, s, i, split) for i, (q, s) in enumerate(QUESTIONS)]


def write_parquet(rows: list[dict], path: Path) -> Path:
    """As verl's script does (datasets' to_parquet is pyarrow underneath)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def port(source: str) -> str:
    """The whole porting step: `from verl.X` -> `from agentgym.X`, and verl/tools' relative imports -> ours.
    Checks that nothing but import lines changed."""
    lines = source.splitlines()
    ported = []
    for line in lines:
        if line.startswith("from verl."):
            line = "from agentgym." + line[len("from verl."):]
        elif line.startswith("from ."):
            line = "from agentgym.tools." + line[len("from ."):]
        ported.append(line)
    changed = [(a, b) for a, b in zip(lines, ported) if a != b]
    assert changed and all(a.startswith("from ") and b.startswith("from agentgym.") for a, b in changed)
    return "\n".join(ported) + "\n"


def install_ported(tmp_path: Path, monkeypatch) -> None:
    """Put the ported tool and interaction modules on the import path as `ported_tools`, `ported_interaction`."""
    (tmp_path / "ported_tools.py").write_text(port((HERE / "verl_style_tools.py.txt").read_text()))
    (tmp_path / "ported_interaction.py").write_text(port((HERE / "verl_style_interaction.py.txt").read_text()))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("ported_tools", "ported_interaction"):
        sys.modules.pop(name, None)


ANSWER_TOOL_YAML = """tools:
  - class_name: ported_tools.AnswerCheckTool
    config:
      type: native
    tool_schema:
      type: function
      function:
        name: calc_gsm8k_reward
        description: A tool for calculating the reward of gsm8k
        parameters:
          type: object
          properties:
            answer:
              type: string
              description: The model's answer to the GSM8K math problem, must be a digits
          required: ["answer"]
  - class_name: ported_tools.ScratchpadTool
    config:
      type: native
      label: ${oc.env:AGENTGYM_TEST_NOTE_LABEL,notes}
    tool_schema:
      type: function
      function:
        name: scratchpad
        description: Keep a note.
        parameters:
          type: object
          properties:
            note: {type: string, description: the note}
          required: ["note"]
"""

# verl's interaction YAML layout; without `name`, the name comes from the class (verl's rule: `answerfeedback`).
INTERACTION_YAML = """interaction:
  - class_name: ported_interaction.AnswerFeedbackInteraction
    config: {}
"""


def tool_call(name: str, arguments: dict) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def scripted_student(steps: list[str]):
    """A ScriptedEngine script: the k-th assistant turn says steps[k] (the last one repeats), with `{answer}` and
    `{wrong}` filled in for the row's question."""
    answers = {q: final_number(s) for q, s in QUESTIONS}

    def script(conversation: str, session_id: str | None) -> str:
        question = next(q for q in answers if q in conversation)
        done = conversation.count("<|im_start|>assistant") - 1
        answer = answers[question]
        return steps[min(done, len(steps) - 1)].replace("{answer}", answer).replace("{wrong}", str(int(answer) + 1))

    return script
