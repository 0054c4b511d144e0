"""A tool written for verl runs here after changing only its import lines."""

import sys
from dataclasses import dataclass
from pathlib import Path

from agentgym.episode.session import Session
from agentgym.tools.registry import build_tools, load_tool_specs

SOURCE = Path(__file__).with_name("verl_style_tool.py.txt")

TOOL_YAML = """tools:
  - class_name: ported_word_count.WordCountTool
    config: {type: native}
    tool_schema:
      type: function
      function:
        name: word_count
        description: Count words.
        parameters:
          type: object
          properties:
            text: {type: string, description: text to count}
          required: [text]
"""


@dataclass
class Call:
    name: str
    arguments: dict


def port(source: str) -> str:
    """The whole porting step: `from verl.` becomes `from agentgym.` on import lines, nothing else."""
    lines = source.splitlines()
    ported = [line.replace("from verl.", "from agentgym.", 1) if line.startswith("from verl.") else line for line in lines]
    changed = [(a, b) for a, b in zip(lines, ported) if a != b]
    assert len(changed) == 2 and all(a.startswith("from verl.") for a, _ in changed)
    return "\n".join(ported) + "\n"


async def test_verl_tool_ports_by_changing_imports(tmp_path, monkeypatch):
    (tmp_path / "ported_word_count.py").write_text(port(SOURCE.read_text()))
    (tmp_path / "tools.yaml").write_text(TOOL_YAML)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        tools = build_tools(load_tool_specs(tmp_path / "tools.yaml"))
        extra = {"tools_kwargs": {"word_count": {"create_kwargs": {"target": 3}}}}
        async with Session(tools, extra_info=extra) as session:
            first, again, bad = await session.run_calls(
                [Call("word_count", {"text": "a b c"}), Call("word_count", {"text": "x y z"}), Call("word_count", {"txt": "a"})]
            )
            scores = await session.scores()
        assert first.text == '{"words": 3}' and first.metrics == {"count": 3}
        assert sorted([first.reward, again.reward]) == [-0.05, 0.0]
        assert bad.error.startswith("Error: invalid arguments for tool `word_count`: argument `text` is required but missing.")
        assert scores.tool_rewards == {"word_count": 1.0}
        assert tools["word_count"]._instance_dict == {}, "release ran"
    finally:
        sys.modules.pop("ported_word_count", None)
