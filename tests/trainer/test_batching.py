import torch

from agentgym.trainer.batching import (
    SampleBatch,
    balance_across_ranks,
    gather_outputs,
    group_minibatches,
    plan_forward,
    plan_update,
    split_micro,
)



def test_sample_batch_keeps_token_ids_and_masks(trajectories):
    batch = SampleBatch.from_trajectories(trajectories)
    assert batch.input_ids[2].tolist() == [12, 13, 14, 15, 30, 31, 16, 17]
    assert batch.prompt_lens == [3, 3, 2, 2]
    assert batch.response_lens == [4, 3, 6, 4]
    assert batch.padded("loss_mask")[2].tolist() == [1, 1, 0, 0, 1, 1]


def test_pack_layout_points_logits_at_previous_position(trajectories):
    batch = SampleBatch.from_trajectories(trajectories)
    (micro,) = plan_forward(batch, ["loss_mask"], 1)[0]
    assert micro.input_ids.shape == (1, sum(batch.seq_lens))
    ids = micro.input_ids[0]
    # every label is the token right after its logit position, and positions restart per sequence
    assert torch.equal(ids[micro.logit_positions + 1], micro.labels)
    assert micro.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5]
    assert micro.padded("loss_mask").shape == (4, 6)


def test_token_budget_bins_and_long_sequences():
    lengths = {0: 5, 1: 4, 2: 3, 3: 9, 4: 2}
    bins = split_micro(list(lengths), lengths, 8, None)
    assert sorted(i for b in bins for i in b) == [0, 1, 2, 3, 4]
    for b in bins:
        assert sum(lengths[i] for i in b) <= 8 or len(b) == 1  # 9 > budget: alone
    assert split_micro([0, 1, 2, 3, 4], lengths, None, 2) == [[0, 1], [2, 3], [4]]


def test_ranks_balanced_and_lock_step(trajectories):
    lengths = {i: n for i, n in enumerate([10, 9, 8, 1, 1, 1])}
    shards = balance_across_ranks(lengths, 2)
    loads = [sum(lengths[i] for i in s) for s in shards]
    assert sorted(loads) == [13, 17]  # the best split of {10,9,8,1,1,1}
    batch = SampleBatch.from_trajectories(trajectories)
    plans = plan_forward(batch, ["loss_mask"], 3, max_token_len=8)
    assert len({len(p) for p in plans}) == 1  # same number of micro-batches per rank
    covered = sorted(i for p in plans for m in p for i in m.sample_indices)
    assert covered == [0, 1, 2, 3]


def test_gather_outputs_restores_sample_order(trajectories):
    batch = SampleBatch.from_trajectories(trajectories)
    plans = plan_forward(batch, ["loss_mask"], 2, max_token_len=9)
    outputs = [[m.labels.float() for m in p] for p in plans]
    gathered = gather_outputs(plans, outputs, len(batch))
    for i, values in enumerate(gathered):
        assert values.tolist() == batch.input_ids[i][batch.prompt_lens[i]:].float().tolist()


def test_minibatches_keep_groups_and_carry_global_normalisers(trajectories):
    assert group_minibatches(["a", "a", "b", "b", "c", "c"], 2, None) == [[0, 1, 2, 3], [4, 5]]
    shuffled = group_minibatches(["a", "a", "b", "b", "c", "c"], 1, seed=3)
    assert sorted(map(tuple, shuffled)) == [(0, 1), (2, 3), (4, 5)]
    batch = SampleBatch.from_trajectories(trajectories)
    plans = plan_update(batch, ["loss_mask"], 2, groups_per_minibatch=1, max_token_len=8)
    assert len(plans) == 2 and len(plans[0]) == 2  # 2 ranks x 2 mini-batches (one group each)
    first_mb = [m for rank in plans for m in rank[0] if not m.is_empty]
    assert {m.num_tokens for m in first_mb} == {7.0}  # group a: 4 + 3 model tokens
    assert {m.num_seqs for m in first_mb} == {2.0}


def test_padded_layout_matches_packed_positions(trajectories):
    batch = SampleBatch.from_trajectories(trajectories)
    (micro,) = plan_forward(batch, ["loss_mask"], 1, padded=True)[0]
    assert micro.input_ids.shape == (4, 8) and micro.attention_mask.sum() == sum(batch.seq_lens)
    flat = micro.input_ids.reshape(-1)
    assert torch.equal(flat[micro.logit_positions + 1], micro.labels)
    assert micro.position_ids[2].tolist() == list(range(8))
    # padded token-budget bins: runs of similar length whose b * max_len fits
    lengths = {0: 8, 1: 7, 2: 3, 3: 3, 4: 2}
    bins = split_micro(list(lengths), lengths, 9, None, padded=True)
    assert bins == [[0], [1], [2, 3, 4]]
