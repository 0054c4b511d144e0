"""Question rows (verl's layout) about the generated world, and its corpus for the retrieval server.

    python -m agentgym_envs.kb_search.data --out data/kb_search/train.parquet --rows 256
    python -m agentgym_envs.kb_search.data --corpus data/kb_search/corpus.jsonl
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from agentgym_envs.kb_search.world import World, make_world

SYSTEM_PROMPT = ("Answer with facts from the knowledge base: search it with the search tool first. "
                 "Give the final answer as \\boxed{year}.")


@dataclass(frozen=True)
class KbSearchTaskConfig:
    num_rows: int = 256
    seed: int = 0
    split: str = "train"
    world_seed: int = 0
    world_people: int = 1000
    world_companies: int = 60
    two_hop_share: float = 0.5
    system_prompt: str = SYSTEM_PROMPT

    def world(self) -> World:
        return make_world(self.world_seed, self.world_people, self.world_companies)


def make_rows(cfg: KbSearchTaskConfig) -> list[dict[str, Any]]:
    """One-hop rows ask for a person's birth year (one search); two-hop rows for the founding year of the
    person's employer (search the person, then the company the document names)."""
    if not 0.0 <= cfg.two_hop_share <= 1.0:
        raise ValueError(f"two_hop_share is a share from 0 to 1, got {cfg.two_hop_share}")
    people = cfg.world().split_people(cfg.split)
    rng = random.Random(f"kb-{cfg.split}-{cfg.seed}")
    rows = []
    for index in range(cfg.num_rows):
        person = rng.choice(people)
        if rng.random() < cfg.two_hop_share:
            hops, question = 2, f"In which year was the company that {person.name} works for founded?"
            answer, path = str(person.employer.founded), [person.name, person.employer.name]
        else:
            hops, question, answer, path = 1, f"In which year was {person.name} born?", str(person.born), [person.name]
        rows.append({
            "data_source": "agentgym/kb_search",
            "prompt": [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": question}],
            "ability": "search",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {
                "split": cfg.split,
                "index": index,
                "hops": hops,
                "search_path": path,
                "interaction_kwargs": {"name": "search_answer", "ground_truth": answer},
            },
        })
    return rows


def write_corpus(out: str | Path, cfg: KbSearchTaskConfig = KbSearchTaskConfig()) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        handle.writelines(json.dumps(doc) + "\n" for doc in cfg.world().corpus())
    return path


def main(argv: Sequence[str] | None = None) -> None:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--corpus"] and len(args) == 2:
        print(f"wrote the corpus ({len(make_world().corpus())} documents) to {write_corpus(args[1])}")
        return
    from agentgym_envs.data_cli import task_data_cli

    task_data_cli(make_rows, KbSearchTaskConfig, prog="python -m agentgym_envs.kb_search.data",
                  description="write knowledge-base search rows in verl's dataset layout (or, with --corpus PATH "
                              "alone, the corpus the retrieval server indexes)", argv=args)


if __name__ == "__main__":
    main()
