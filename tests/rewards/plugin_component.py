"""A reward component from outside agentgym.rewards, loaded by `kind: tests.rewards.plugin_component:make`: the
shape a visual-consistency component takes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ResponseHasWord:
    name: str
    word: str
    per_sample: bool = True
    calls: int = 0

    async def score(self, trajectories):
        self.calls += 1
        return [float(any(self.word in (m.get("content") or "") for m in t.messages if m.get("role") == "assistant"))
                for t in trajectories]

    def step_metrics(self):
        return {f"reward/{self.name}/calls": float(self.calls)}


def make(spec, context):
    return ResponseHasWord(spec.name, spec.kwargs["word"])
