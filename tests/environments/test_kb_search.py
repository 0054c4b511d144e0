"""The knowledge-base search environment: its rows, its corpus behind the real retrieval server, the ideal policy
through the real agent loop and search tool, and main_ppo steps on its train.yaml."""

import asyncio
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from agentgym.config import load_config
from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.tools.sandbox_fusion import aclose_http_sessions
from agentgym_envs.kb_search import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.kb_search.data import KbSearchTaskConfig, make_rows, write_corpus
from agentgym_envs.kb_search.solver import found_answer, ideal_script
from agentgym_envs.kb_search.world import make_world
from retrieval_server.launch import RetrievalServerProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("kb") / "corpus.jsonl")
    with RetrievalServerProcess(corpus) as running:
        yield running


def tools_yaml(tmp_path: Path, url: str, topk: int = 3) -> Path:
    text = TOOL_CONFIG.read_text().replace("http://127.0.0.1:8000/retrieve", url).replace("topk: 3", f"topk: {topk}")
    (tmp_path / "tools.yaml").write_text(text)
    return tmp_path / "tools.yaml"


def test_rows_are_seeded_and_held_out_questions_ask_about_other_people():
    cfg = KbSearchTaskConfig(num_rows=200, seed=3)
    assert make_rows(cfg) == make_rows(cfg)
    train = make_rows(cfg)
    test = make_rows(replace(cfg, split="test"))
    assert not {r["extra_info"]["search_path"][0] for r in train} & {r["extra_info"]["search_path"][0] for r in test}
    assert 60 < sum(r["extra_info"]["hops"] == 2 for r in train) < 140
    for row in train + test:
        truth = row["reward_model"]["ground_truth"]
        assert re.fullmatch(r"\d{4}", truth) and truth not in row["prompt"][1]["content"]
        assert row["extra_info"]["interaction_kwargs"] == {"name": "search_answer", "ground_truth": truth}
    assert all(r["extra_info"]["hops"] == 1 for r in make_rows(replace(cfg, two_hop_share=0.0)))


def test_corpus_has_one_document_per_entity_with_its_facts(tmp_path):
    world = make_world()
    docs = [json.loads(line) for line in write_corpus(tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(docs) == len(world.people) + len(world.companies) == len({d["id"] for d in docs})
    person = world.people[7]
    [doc] = [d for d in docs if d["contents"].startswith(person.name + "\n")]
    assert f"born in {person.born}" in doc["contents"] and person.employer.name in doc["contents"]


def test_data_command_writes_rows_and_the_corpus(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "agentgym_envs.kb_search.data", *args], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout

    assert "wrote 6 rows" in run("--out", str(tmp_path / "rows.parquet"), "--rows", "6")
    assert "documents" in run("--corpus", str(tmp_path / "corpus.jsonl"))
    assert (tmp_path / "corpus.jsonl").read_text().count("\n") == len(make_world().corpus())


def test_ideal_policy_solves_every_question_through_the_real_search(server, tmp_path):
    """Top-1 BM25 on an entity's name finds its document, for every hop the questions use."""
    tokenizer = tiny_tokenizer()
    rows = make_rows(KbSearchTaskConfig(num_rows=24, seed=1, split="test"))
    tools = build_tools(load_tool_specs(tools_yaml(tmp_path, server.retrieve_url, topk=1)))
    loop = AgentLoop(ScriptedEngine(tokenizer, ideal_script(rows, "s-", direct_rows={0})), tokenizer, tools,
                     load_interactions(INTERACTION_CONFIG))

    async def run():
        try:
            return await loop.run_batch(rows, group_prefix="s-")
        finally:
            await aclose_http_sessions()

    trajs = asyncio.run(run())
    assert [t.final_score for t in trajs] == [1.0] * len(rows), [t.messages for t in trajs if t.final_score < 1]
    assert [t.num_tool_calls for t in trajs] == [0] + [r["extra_info"]["hops"] for r in rows[1:]]
    assert not found_answer(trajs[0].messages, rows[0]["reward_model"]["ground_truth"])
    assert all(found_answer(t.messages, r["reward_model"]["ground_truth"]) for t, r in zip(trajs[1:], rows[1:]))


def test_train_yaml_runs_main_ppo_steps_against_the_server(server, tmp_path, tiny_model_dir):
    """The header's commands with a test server's URL and small sizes: two GRPO steps, real tool and teacher."""
    cfg = load_config(REPO / "agentgym_envs/kb_search/train.yaml")
    assert cfg.actor_rollout_ref.rollout.multi_turn.tool_config_path == "agentgym_envs/kb_search/tools.yaml"
    rows = tmp_path / "train.parquet"
    subprocess.run([sys.executable, "-m", "agentgym_envs.kb_search.data", "--out", str(rows), "--rows", "4"],
                   cwd=REPO, check=True, capture_output=True)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "agentgym.trainer.main_ppo", "agentgym_envs/kb_search/train.yaml",
        f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files={rows}",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tools_yaml(tmp_path, server.retrieve_url)}",
        "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.rollout.n=2",
        "data.max_response_length=48", "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
        "trainer.total_training_steps=2", "trainer.use_ray=false", "trainer.save_freq=-1",
        "trainer.logger=[jsonl]", f"trainer.default_local_dir={run_dir}",
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and "actor/grad_norm" in json.dumps(metrics)


def test_every_entity_is_found_first_by_its_name(tmp_path):
    """The whole world, not a sample: top-1 BM25 on each person's and company's name is its own document (name
    parts that stem alike, or a stop word as a name, would send the ideal policy to someone else)."""
    from retrieval_server.index import Bm25Index, build_index

    world = make_world()
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    build_index(corpus, tmp_path / "index.sqlite")
    index = Bm25Index(tmp_path / "index.sqlite")
    try:
        for entity in (*world.people, *world.companies):
            [(doc, _)] = index.search(entity.name, 1)
            assert doc["contents"].splitlines()[0] == entity.name, entity.name
    finally:
        index.close()
