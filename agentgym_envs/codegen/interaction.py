"""The unit-test teacher: runs the model's function against hidden tests in the sandbox and says what failed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional
from uuid import uuid4

from agentgym.interactions.base import BaseInteraction
from agentgym.tools.sandbox_fusion import SandboxFusionTool

_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)
_RESULT = re.compile(r"^AGENTGYM_TESTS (\d+)/(\d+)$", re.M)

# Runs after the model's code; prints one line per failed test and a machine-readable summary line last.
_HARNESS = """
import json as _json
_tests = _json.loads({tests!r})
_passed = 0
for _i, (_args, _want) in enumerate(_tests):
    try:
        _got = {entry}(*_args)
    except Exception as _e:
        print(f"test {{_i + 1}}: {entry}(*{{_args!r}}) raised {{type(_e).__name__}}: {{_e}}")
        continue
    if _got == _want:
        _passed += 1
    else:
        print(f"test {{_i + 1}}: {entry}(*{{_args!r}}) returned {{_got!r}}, expected {{_want!r}}")
print(f"AGENTGYM_TESTS {{_passed}}/{{len(_tests)}}")
"""


def extract_code(text: str) -> str | None:
    blocks = _CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else None


@dataclass
class _Task:
    entry_point: str
    tests: list
    attempts: int = 0
    scores: list[float] = field(default_factory=list)


class UnitTestInteraction(BaseInteraction):
    """Score = share of hidden tests passed by the last submission; feedback lists the failures (up to 3)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.max_attempts = int(self.config.get("max_attempts", 2))
        self.run_timeout = float(self.config.get("run_timeout", 5))
        sandbox = {"type": "native", "default_timeout": self.run_timeout, **(self.config.get("sandbox") or {})}
        self.sandbox = SandboxFusionTool(sandbox, None)
        self._tasks: dict[str, _Task] = {}

    async def start_interaction(self, instance_id: Optional[str] = None, entry_point: str = "solve",
                                tests: Any = None, **kwargs: Any) -> str:
        if not tests:
            raise ValueError(f"interaction `{self.name}` needs `tests` ([[args, expected], ...]) in extra_info.interaction_kwargs.")
        instance_id = instance_id or str(uuid4())
        self._tasks[instance_id] = _Task(entry_point=entry_point, tests=list(tests))
        return instance_id

    async def run_tests(self, task: _Task, code: str) -> tuple[int, int, str]:
        program = code + "\n" + _HARNESS.format(tests=json.dumps(task.tests), entry=task.entry_point)
        response, _, metrics = await self.sandbox.execute(f"tests-{uuid4().hex}", {"code": program})
        text = response.text or ""
        found = _RESULT.findall(text)
        if not found:
            return 0, len(task.tests), text
        passed, total = map(int, found[-1])
        failures = [line for line in text.splitlines() if line.startswith("test ")]
        return passed, total, "\n".join(failures[:3])

    async def generate_response(self, instance_id: str, messages: list[dict[str, Any]],
                                **kwargs: Any) -> tuple[bool, str, float, dict[str, Any]]:
        task = self._tasks[instance_id]
        task.attempts += 1
        reply = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "assistant"), "")
        code = extract_code(reply)
        last = task.attempts >= self.max_attempts
        if code is None:
            task.scores.append(0.0)
            return last, "No ```python code block found. Submit the whole function in one.", 0.0, {"passed": 0}
        passed, total, detail = await self.run_tests(task, code)
        score = passed / total if total else 0.0
        task.scores.append(score)
        if passed == total:
            return True, f"All {total} tests passed.", score, {"passed": passed, "total": total}
        message = f"{passed}/{total} tests passed.\n{detail}".strip()
        if not last:
            message += "\nFix the function and submit it again."
        return last, message, score, {"passed": passed, "total": total}

    async def calculate_score(self, instance_id: str, **kwargs: Any) -> float:
        task = self._tasks.get(instance_id)
        return task.scores[-1] if task and task.scores else 0.0

    async def finalize_interaction(self, instance_id: str, **kwargs: Any) -> None:
        self._tasks.pop(instance_id, None)
