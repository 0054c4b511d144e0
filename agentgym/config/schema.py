"""Typed run configuration. Section and key names follow verl's ppo_trainer.yaml so verl command lines carry over.

Only keys agentgym acts on (or that verl users commonly pass and are harmless) exist; anything else is rejected by
`agentgym.config.loader` with the closest valid key, because a silently ignored typo ruins a long run.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# Both name lists must match the registries in agentgym.trainer.algorithms (tests/trainer/test_policy_losses.py).
AdvEstimator = Literal["grpo", "gae", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "gpg", "remax", "opo",
                       "grpo_passk"]
LossMode = Literal["vanilla", "gspo", "gpg", "cispo", "clip_cov", "kl_cov", "sapo", "geo_mean"]
LossAggMode = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
KLPenalty = Literal["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"]
Dtype = Literal["fp32", "bf16", "fp16", "float32", "bfloat16", "float16"]


class MixedPrecision(Section):
    param_dtype: Dtype = "bf16"
    reduce_dtype: Dtype = "fp32"


class FSDPConfig(Section):
    """FSDP2 (`fully_shard`) settings for one model."""

    param_offload: bool = False
    optimizer_offload: bool = False
    reshard_after_forward: bool = True
    fsdp_size: int = -1
    model_dtype: Dtype = "fp32"
    mixed_precision: MixedPrecision | None = None


class OptimConfig(Section):
    lr: float = 1e-6
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_warmup_steps: int = -1
    lr_warmup_steps_ratio: float = 0.0
    warmup_style: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0
    num_cycles: float = 0.5
    total_training_steps: int = -1


class CheckpointConfig(Section):
    save_contents: list[Literal["model", "optimizer", "extra", "hf_model"]] = ["model", "optimizer", "extra"]
    load_contents: list[Literal["model", "optimizer", "extra", "hf_model"]] = ["model", "optimizer", "extra"]


class ModelConfig(Section):
    path: str | None = None
    tokenizer_path: str | None = None
    trust_remote_code: bool = False
    override_config: dict[str, Any] = Field(default_factory=dict)
    enable_gradient_checkpointing: bool = False
    # True: one packed row per micro-batch (best with varlen attention, e.g. flash-attention); False: a padded
    # batch of similar lengths (best with dense-mask SDPA, e.g. on CPU). verl's default is False too.
    use_remove_padding: bool = False
    attn_implementation: str = "sdpa"


class PolicyLossConfig(Section):
    """verl's actor.policy_loss: which loss (docs/algorithms.md) and the Clip-Cov / KL-Cov knobs."""

    loss_mode: LossMode = "vanilla"
    clip_cov_ratio: float = 0.0002
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    kl_cov_ratio: float = 0.0002
    ppo_kl_coef: float = 0.1


class ActorConfig(Section):
    strategy: Literal["fsdp", "fsdp2"] = "fsdp2"
    ppo_mini_batch_size: int = 8
    ppo_micro_batch_size_per_gpu: int | None = None
    use_dynamic_bsz: bool = True
    ppo_max_token_len_per_gpu: int = 16384
    # verl's actor.yaml sets all three to 0.2, so `clip_ratio` alone changes nothing there; null low/high fall back
    # to clip_ratio (docs/algorithms.md).
    clip_ratio: float = 0.2
    clip_ratio_low: float | None = 0.2
    clip_ratio_high: float | None = 0.2
    clip_ratio_c: float | None = 3.0
    loss_agg_mode: LossAggMode = "token-mean"
    loss_scale_factor: float | None = None
    # ours: False gives seq-mean-token-sum-norm as sum(seq sums)/loss_scale_factor (verl's agg_loss, new engine
    # workers); True also averages over the mini-batch's sequences, as verl's default FSDP actor does in effect.
    norm_seq_mean: bool = True
    policy_loss: PolicyLossConfig = Field(default_factory=PolicyLossConfig)
    # SAPO's gate temperatures for positive / negative advantages (verl's keys and defaults)
    tau_pos: float = Field(1.0, gt=0)
    tau_neg: float = Field(1.05, gt=0)
    entropy_coeff: float = 0.0
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001
    kl_loss_type: KLPenalty = "low_var_kl"
    ppo_epochs: int = 1
    shuffle: bool = False
    grad_clip: float = 1.0
    recompute_old_log_prob: bool = True
    # torch.compile each transformer block (fuses the elementwise work between matmuls). None: on when the trainer
    # runs on CUDA, off on CPU (compiling there costs more than it saves on small models).
    use_torch_compile: bool | None = None
    optim: OptimConfig = Field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    fsdp_config: FSDPConfig = Field(default_factory=FSDPConfig)

    @model_validator(mode="after")
    def _warn_inert_clip_ratio(self) -> "ActorConfig":
        inert = [k for k in ("clip_ratio_low", "clip_ratio_high")
                 if k not in self.model_fields_set and getattr(self, k) is not None and getattr(self, k) != self.clip_ratio]
        if "clip_ratio" in self.model_fields_set and inert:
            warnings.warn(
                f"actor_rollout_ref.actor.clip_ratio={self.clip_ratio} does not change {' or '.join(inert)} (0.2, as in "
                f"verl); set actor_rollout_ref.actor.{inert[0]}={self.clip_ratio} (or null to follow clip_ratio)",
                UserWarning, stacklevel=2)
        return self


class RefConfig(Section):
    log_prob_micro_batch_size_per_gpu: int | None = None
    log_prob_use_dynamic_bsz: bool = True
    log_prob_max_token_len_per_gpu: int = 16384
    use_torch_compile: bool | None = None
    fsdp_config: FSDPConfig = Field(default_factory=FSDPConfig)


class SamplingKwargs(Section):
    temperature: float = 0.0
    top_k: int = -1
    top_p: float = 1.0
    n: int = 1
    do_sample: bool = False


class MultiTurnConfig(Section):
    enable: bool = True
    max_assistant_turns: int | None = None
    max_user_turns: int | None = None
    tool_config_path: str | None = None
    function_tool_path: str | None = None  # a .py file of @function_tool functions (verl's key)
    interaction_config_path: str | None = None
    max_parallel_calls: int = 1
    max_tool_response_length: int = 256
    tool_response_truncate_side: Literal["left", "right", "middle"] = "middle"
    use_inference_chat_template: bool = False
    tokenization_sanity_check_mode: Literal["strict", "ignore_strippable", "disable"] = "strict"
    format: str = "hermes"
    # ours: False renders prompts without the tools' JSON schemas (for models trained from scratch)
    tool_schemas_in_prompt: bool = True
    # ours: `trajectory` (one tool instance per episode, scored by calc_reward: verl <= 0.6's SGLang rollout) or
    # `call` (one per call, no calc_reward: verl's ToolAgentLoop, 0.5 on); docs/verl.md
    tool_instance_lifetime: Literal["trajectory", "call"] = "trajectory"
    # ours: an environment server's URL (`python3 -m agentgym.services.environment`): sessions run there
    # (RemoteSession) instead of with tool_config_path / interaction_config_path in this process
    environment_url: str | None = None


class AgentConfig(Section):
    # verl's key: agent-loop worker Ray actors running the step's episodes over the trainer ranks' replicas
    # (rollout.placement=colocated); 1 runs them in the driver's event loop. docs/scale.md
    num_workers: int = Field(1, ge=1)
    agent_loop_config_path: str | None = None


class ExternalAgentConfig(Section):
    """ours: the agent that `agentgym.services.gateway.rollout:make_rollout` launches per sample, against the gateway.
    `command` is a shell-style command line ({base_url}, {session_id}, {row_file}, {gateway_url} are filled in, and
    the same go into OPENAI_BASE_URL, AGENTGYM_SESSION_ID, AGENTGYM_ROW_FILE, AGENTGYM_GATEWAY_URL); `callable`
    is `module:function` or `file.py:function`, taking an AgentContext and returning the agent's score or None
    (`callable_kind`: `thread` for blocking code such as the sync openai client, `async` for a coroutine function).
    `reward`: `agent` (the score it returned or POSTed), `environment` (the row's interaction scores the recorded
    conversation), or `auto` (the agent's score when it reported one, else the environment's when an interaction
    is configured); custom_reward_function, when set, replaces either, as for every rollout."""

    command: str | None = None
    callable: str | None = None
    callable_kind: Literal["thread", "async"] = "thread"
    timeout_s: float = Field(600.0, gt=0)
    max_concurrent: int = Field(64, ge=1)
    reward: Literal["auto", "agent", "environment"] = "auto"
    host: str = "127.0.0.1"
    port: int = 0


class RolloutConfig(Section):
    name: str = "transformers"
    mode: Literal["async", "sync"] = "async"
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    prompt_length: int | None = None
    response_length: int | None = None
    dtype: Dtype = "bf16"
    gpu_memory_utilization: float = 0.5
    # verl's key: the servers' TP size; in-process with placement=colocated, each TP consecutive trainer ranks form
    # one replica split over them by heads (world_size / TP replicas). docs/scale.md
    tensor_model_parallel_size: int = 1
    max_model_len: int | None = None
    max_num_seqs: int = 1024
    n: int = 1
    do_sample: bool = True
    ignore_eos: bool = False
    calculate_log_probs: bool = True
    log_prob_micro_batch_size_per_gpu: int | None = None
    log_prob_use_dynamic_bsz: bool = True
    log_prob_max_token_len_per_gpu: int = 16384
    val_kwargs: SamplingKwargs = Field(default_factory=SamplingKwargs)
    multi_turn: MultiTurnConfig = Field(default_factory=MultiTurnConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    external_agent: ExternalAgentConfig = Field(default_factory=ExternalAgentConfig)
    engine_kwargs: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"sglang": {}, "transformers": {}, "vllm": {}})
    # ours: where the in-process engine runs. `colocated`: a replica in every trainer rank, on its device (verl's
    # hybrid engine), weights synced inside the rank; `separate`: replicas as Ray actors on a pool of their own
    # (trainer.mapping.rollout, default `rollout_pool` of rollout.nnodes x rollout.n_gpus_per_node), weights
    # broadcast from trainer rank 0; `driver`: one engine in the driver process; `auto`: colocated on CUDA with
    # Ray, the driver otherwise. Server engines (sglang, vllm): `separate` has each rollout-pool actor launch its
    # server on its GPU; otherwise they run where they are launched (the driver's children) or given by URL.
    # docs/scale.md
    placement: Literal["auto", "driver", "colocated", "separate"] = "auto"
    # ours: how a separate pool's servers get the weights. `distributed`: a collective broadcast from trainer rank 0
    # (SGLang's init_weights_update_group + update_weights_from_distributed); `disk`: safetensors in a folder every
    # server reads (a shared filesystem across nodes); `auto`: distributed for sglang, disk for vllm (vLLM's
    # weight-transfer routes are not driven yet). The in-process replicas of a separate pool are always broadcast to.
    weight_sync: Literal["auto", "distributed", "disk"] = "auto"
    # verl's key: the bucket size of the weight broadcast to a separate rollout pool (a float here: tests use < 1)
    update_weights_bucket_megabytes: float = Field(512, gt=0)
    # verl's keys (one_step_off_policy's separate rollout pool): the default `rollout_pool`, one replica per GPU
    nnodes: int = Field(1, ge=1)
    n_gpus_per_node: int = Field(1, ge=1)
    # verl's key: colocated replicas free their KV cache (and decode graphs) after the rollout and take it back after
    # the weight sync, leaving the memory to old log-probs and the update. docs/scale.md
    free_cache_engine: bool = True


class ActorRolloutRefConfig(Section):
    hybrid_engine: bool = True
    model: ModelConfig = Field(default_factory=ModelConfig)
    actor: ActorConfig = Field(default_factory=ActorConfig)
    ref: RefConfig = Field(default_factory=RefConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)


class CriticModelConfig(ModelConfig):
    fsdp_config: FSDPConfig = Field(default_factory=FSDPConfig)


class CriticConfig(Section):
    enable: bool | None = None
    strategy: Literal["fsdp", "fsdp2"] = "fsdp2"
    model: CriticModelConfig = Field(default_factory=CriticModelConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5))
    ppo_mini_batch_size: int | None = None
    ppo_micro_batch_size_per_gpu: int | None = None
    use_dynamic_bsz: bool = True
    ppo_max_token_len_per_gpu: int = 32768
    forward_max_token_len_per_gpu: int | None = None
    ppo_epochs: int | None = None
    shuffle: bool = False
    cliprange_value: float = 0.5
    loss_agg_mode: LossAggMode | None = None
    grad_clip: float = 1.0
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)


class KLControlConfig(Section):
    type: Literal["fixed", "adaptive"] = "fixed"
    kl_coef: float = 0.001
    horizon: int = 10000
    target_kl: float = 0.1


class RolloutCorrectionConfig(Section):
    """Truncated importance weights min(pi_old/pi_rollout, threshold) on the policy loss (verl's keys)."""

    rollout_is: Literal["token", "sequence"] | None = None
    rollout_is_threshold: float = Field(2.0, gt=0)


class FilterGroupsConfig(Section):
    """DAPO dynamic sampling (agentgym.trainer.dynamic_sampling). Every metric name filters on the trajectory's
    score (KL-in-reward is applied after filtering here)."""

    enable: bool = False
    metric: Literal["score", "seq_reward", "seq_final_reward"] | None = None
    max_num_gen_batches: int = 0


class TurnCreditConfig(Section):
    """Ours (verl has no turn-level credit): where per-turn rewards sit and which return each token gets
    (agentgym.trainer.algorithms.turn_credit, docs/algorithms.md)."""

    mode: Literal["outcome", "discounted", "turn_grpo"] = "outcome"
    gamma: float = Field(1.0, ge=0.0, le=1.0)  # discount per assistant turn


class AlgorithmConfig(Section):
    gamma: float = 1.0
    lam: float = 1.0
    adv_estimator: AdvEstimator = "grpo"
    norm_adv_by_std_in_grpo: bool = True
    use_kl_in_reward: bool = False
    kl_penalty: KLPenalty = "kl"
    kl_ctrl: KLControlConfig = Field(default_factory=KLControlConfig)
    rollout_correction: RolloutCorrectionConfig = Field(default_factory=RolloutCorrectionConfig)
    filter_groups: FilterGroupsConfig = Field(default_factory=FilterGroupsConfig)
    turn_credit: TurnCreditConfig = Field(default_factory=TurnCreditConfig)

    @model_validator(mode="after")
    def _turn_credit_fits_the_estimator(self) -> "AlgorithmConfig":
        mode, gamma = self.turn_credit.mode, self.turn_credit.gamma
        allowed = {"outcome": None, "discounted": ("grpo", "gae", "reinforce_plus_plus"), "turn_grpo": ("grpo",)}[mode]
        if allowed is not None and self.adv_estimator not in allowed:
            raise ValueError(f"algorithm.turn_credit.mode={mode} works with adv_estimator {' or '.join(allowed)}, "
                             f"not {self.adv_estimator}; set turn_credit.mode=outcome or change the estimator")
        if mode == "discounted" and self.adv_estimator != "grpo" and gamma != 1.0:
            raise ValueError(f"algorithm.turn_credit.gamma={gamma} applies to grpo; {self.adv_estimator} discounts "
                             f"per model token with algorithm.gamma (turn_credit.mode=discounted places the rewards)")
        return self


class DataConfig(Section):
    tokenizer: str | None = None
    reward_fn_key: str = "data_source"
    train_files: str | list[str] | None = None
    val_files: str | list[str] | None = None
    prompt_key: str = "prompt"
    image_key: str = "images"  # verl's VLM rows: images for the prompt's `<image>` placeholders
    max_prompt_length: int = 512
    max_response_length: int = 512
    train_batch_size: int = 8
    val_batch_size: int | None = None
    shuffle: bool = True
    seed: int = 1
    dataloader_num_workers: int = 0
    return_raw_chat: bool = True
    filter_overlong_prompts: bool = False
    truncation: Literal["error", "left", "right", "middle"] = "error"


class OverlongBufferConfig(Section):
    """DAPO's soft length penalty (agentgym.trainer.algorithms.overlong)."""

    enable: bool = False
    len: int = 0
    penalty_factor: float = 1.0
    log: bool = False


class RewardRateLimitConfig(Section):
    """ours: the `rate_limited` reward manager's limits (agentgym.rewards.managers)."""

    max_concurrent: int = Field(8, ge=1)
    max_rpm: float | None = Field(None, gt=0)  # calls started per minute; None: no rate bound
    burst: int = Field(1, ge=1)
    timeout: float | None = Field(300.0, gt=0)  # seconds one call may take; past it the sample scores 0
    shared: bool = False  # one bucket for every process of the run (a Ray actor), not one per process


class RewardModelModelConfig(Section):
    path: str | None = None
    input_tokenizer: str | None = None  # verl: the actor's tokenizer when it differs; the RM always reads messages
    trust_remote_code: bool = False


class JudgeConfig(Section):
    """ours: a generative judge (agentgym.rewards.judge): a prompt template and a score parser on an engine."""

    enable: bool = False
    model_path: str | None = None
    engine: Literal["transformers", "sglang"] = "transformers"
    url: str | None = None  # engine=sglang: a running server; None launches one for model_path
    template: str | None = None  # jinja2 with prompt, response, ground_truth, messages; None: the built-in one
    template_path: str | None = None
    score_pattern: str | None = None  # regex whose first group is the score; None: the built-in parser
    max_score: float = Field(10.0, gt=0)  # scores are divided by it (a 0-10 judge gives 0-1)
    max_new_tokens: int = Field(256, ge=1)
    max_concurrent: int = Field(32, ge=1)


class RewardComponentConfig(Section):
    """ours: one named term of a mixed reward (agentgym.rewards.mix)."""

    name: str
    kind: str
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)


class RewardModelConfig(Section):
    """verl's reward_model section: the reward manager, a sequence-classification reward model, DAPO's length
    shaping; ours: a generative judge and a weighted mix of named components."""

    enable: bool = False
    strategy: str = "fsdp"
    model: RewardModelModelConfig = Field(default_factory=RewardModelModelConfig)
    micro_batch_size_per_gpu: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=1)
    enable_resource_pool: bool = False
    n_gpus_per_node: int = Field(0, ge=0)
    nnodes: int = Field(0, ge=0)
    reward_manager: Literal["naive", "dapo", "batch", "rate_limited"] = "naive"
    launch_reward_fn_async: bool = False
    rate_limit: RewardRateLimitConfig = Field(default_factory=RewardRateLimitConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    mix: list[RewardComponentConfig] | str | None = None  # a list, or a YAML file holding `components:`
    overlong_buffer: OverlongBufferConfig = Field(default_factory=OverlongBufferConfig)


class CustomRewardFunctionConfig(Section):
    """`path` is a Python file or module; `name` is verl's `compute_score(data_source, solution_str, ground_truth,
    extra_info, **reward_kwargs)` or a `fn(trajectory) -> float`; either replaces `Trajectory.reward`."""

    path: str | None = None
    name: str = "compute_score"
    reward_kwargs: dict[str, Any] = Field(default_factory=dict)


class TrackingConfig(Section):
    """Our settings of the `trainer.logger` backends (verl reads these from environment variables only; those still
    apply when a key here is left out: WANDB_MODE, WANDB_DIR, MLFLOW_TRACKING_URI)."""

    wandb_mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="W&B's mode; offline needs no network and leaves <run dir>/wandb to `wandb sync` later. "
        "None: WANDB_MODE, else W&B's default (online).")
    wandb_entity: str | None = None
    mlflow_tracking_uri: str | None = Field(
        None, description="An MLflow server (http://host:5000) or store URI (sqlite:///path/mlflow.db). None: "
        "MLFLOW_TRACKING_URI, else a SQLite store <run dir>/mlflow.db with artifacts in <run dir>/mlartifacts.")
    trajectory_table_rows: int = Field(
        32, ge=0, description="Trajectories per step in the step's table (W&B Table, MLflow artifact, "
        "TensorBoard text): the first ones of the batch. 0: no table.")


class PoolMappingConfig(Section):
    """ours (verl builds its `mapping` in code): the pool of `trainer.resource_pool_spec` each role runs on. None: the
    default, `global_pool` for the trainer's roles, `rollout_pool` for separate rollout replicas, `reward_pool`
    for a reward model with `reward_model.enable_resource_pool`. docs/scale.md"""

    actor_rollout: str | None = None  # the trainer's ranks (actor; colocated replicas live in them)
    critic: str | None = None  # None: the actor's pool (in the actor's ranks); another pool: a worker group of its own
    ref: str | None = None  # None: the actor's pool (in the actor's ranks); another pool: a worker group of its own
    reward_model: str | None = None
    rollout: str | None = None  # rollout.placement=separate: the replicas' Ray actors


class TrainerConfig(Section):
    balance_batch: bool = True
    total_epochs: int = 1
    total_training_steps: int | None = None
    project_name: str = "agentgym"
    experiment_name: str = "run"
    logger: list[Literal["console", "jsonl", "tensorboard", "wandb", "mlflow"]] = ["console", "jsonl"]
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    nnodes: int = 1
    n_gpus_per_node: int = 1
    save_freq: int = -1
    resume_mode: Literal["auto", "disable", "resume_path"] = "auto"
    resume_from_path: str | None = None
    val_before_train: bool = False
    test_freq: int = -1
    critic_warmup: int = 0
    default_local_dir: str | None = None
    max_actor_ckpt_to_keep: int | None = None
    max_critic_ckpt_to_keep: int | None = None
    device: Literal["auto", "cuda", "cpu"] = "auto"
    use_ray: bool = True
    # verl's names (built in code there): pool name -> GPUs per node, one entry per node ({global_pool: [8, 8]}).
    # None: global_pool = [n_gpus_per_node] * nnodes, plus the rollout and reward pools the config asks for.
    resource_pool_spec: dict[str, list[int]] | None = None
    mapping: PoolMappingConfig = Field(default_factory=PoolMappingConfig)
    # ours (docs/scale.md): a critic or reference on a pool of its own runs its forwards and its update at the same
    # time as the actor's (the results are the same); false runs every phase after the last, as on one pool.
    # None: true when the ranks have GPUs; false on CPU, where every group's ranks take all the cores as threads.
    concurrent_pools: bool | None = None
    # ours: how long the trainer waits for Ray to place its ranks before saying what the cluster lacks
    placement_timeout_s: float = Field(60.0, gt=0)
    # verl's key: each step's trajectories go to <dir>/<step>.jsonl (agentgym view pages through them).
    rollout_data_dir: str | None = None
    rollout_data_parquet: bool = False  # also <dir>/<step>.parquet
    # ours: a step where more than this share of trajectories ended in an error stops the run (all failed always does)
    max_failed_fraction: float = Field(0.5, ge=0.0, le=1.0)
    # ours (docs/async.md): whether rollouts overlap the update. sync: rollout, update, weight sync, in turn.
    # one_step_off: step k+1's rollout runs while step k trains. async: batches are generated ahead, as far as
    # max_staleness allows (AReaL's rollout.max_head_offpolicyness).
    rollout_mode: Literal["sync", "one_step_off", "async"] = "sync"
    # ours: the most policy versions a trained trajectory's oldest token may lag the weights it is trained from;
    # async drops (and counts) groups past it. one_step_off lags by 1 by construction; sync ignores it.
    max_staleness: int = Field(1, ge=0)
    # verl's async_training.partial_rollout: a weight sync pauses a model turn mid-generation (between chunks of
    # partial_rollout_tokens) and the turn goes on with the new weights, instead of finishing it on the old ones.
    partial_rollout: bool = False
    partial_rollout_tokens: int = Field(16, ge=1)  # ours
    # verl's async_training.trigger_parameter_sync_step: how many updates the trainer makes between two weight
    # syncs to the rollout (async only). Policy versions count syncs, so max_staleness counts syncs too.
    trigger_parameter_sync_step: int = Field(1, ge=1)


class RayInitConfig(Section):
    num_cpus: int | None = None
    address: str | None = None


class RayKwargs(Section):
    ray_init: RayInitConfig = Field(default_factory=RayInitConfig)


class AgentGymConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    actor_rollout_ref: ActorRolloutRefConfig = Field(default_factory=ActorRolloutRefConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    custom_reward_function: CustomRewardFunctionConfig = Field(default_factory=CustomRewardFunctionConfig)
    reward_model: RewardModelConfig = Field(default_factory=RewardModelConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    ray_kwargs: RayKwargs = Field(default_factory=RayKwargs)

    @model_validator(mode="after")
    def _check_overlong_buffer(self) -> "AgentGymConfig":
        ob = self.reward_model.overlong_buffer
        if ob.enable and not 0 < ob.len <= self.data.max_response_length:
            raise ValueError(
                f"reward_model.overlong_buffer.len ({ob.len}) must be between 1 and data.max_response_length "
                f"({self.data.max_response_length}) when reward_model.overlong_buffer.enable=true"
            )
        return self

    @model_validator(mode="after")
    def _check_overlap(self) -> "AgentGymConfig":
        t = self.trainer
        if t.rollout_mode == "one_step_off" and t.max_staleness < 1:
            raise ValueError("trainer.rollout_mode=one_step_off trains on rollouts one update old, so it needs "
                             f"trainer.max_staleness >= 1 (got {t.max_staleness}); use rollout_mode=async with "
                             "max_staleness=0 (which is sync) or rollout_mode=sync")
        if t.partial_rollout and t.rollout_mode == "sync":
            raise ValueError("trainer.partial_rollout=true pauses generations at a weight sync, and with "
                             "trainer.rollout_mode=sync no generation runs during one; set rollout_mode=one_step_off "
                             "or async, or partial_rollout=false")
        k = t.trigger_parameter_sync_step
        if k > 1 and t.rollout_mode != "async":
            raise ValueError(
                f"trainer.trigger_parameter_sync_step={k} leaves the rollout on older weights for {k - 1} update(s) "
                f"after each sync, which only rollout_mode=async accounts for (its versions count syncs and "
                f"max_staleness bounds them); rollout_mode={t.rollout_mode} syncs after every update. Set "
                "trainer.rollout_mode=async, or trigger_parameter_sync_step=1")
        return self

    @model_validator(mode="after")
    def _check_batch_sizes(self) -> "AgentGymConfig":
        actor = self.actor_rollout_ref.actor
        if actor.ppo_mini_batch_size > self.data.train_batch_size:
            raise ValueError(
                f"actor_rollout_ref.actor.ppo_mini_batch_size ({actor.ppo_mini_batch_size}) is larger than "
                f"data.train_batch_size ({self.data.train_batch_size}); set it to at most the train batch size"
            )
        if self.data.train_batch_size % actor.ppo_mini_batch_size:
            raise ValueError(
                f"data.train_batch_size ({self.data.train_batch_size}) must be a multiple of "
                f"actor_rollout_ref.actor.ppo_mini_batch_size ({actor.ppo_mini_batch_size})"
            )
        rollout = self.actor_rollout_ref.rollout
        if rollout.placement == "colocated" and (rollout.name != "transformers" or not self.trainer.use_ray):
            raise ValueError(
                "actor_rollout_ref.rollout.placement=colocated puts an in-process engine in every Ray trainer rank: it "
                "needs rollout.name=transformers and trainer.use_ray=true (got "
                f"rollout.name={rollout.name}, trainer.use_ray={self.trainer.use_ray})"
            )
        if rollout.placement == "separate" and (rollout.name not in ("transformers", "sglang", "vllm")
                                                or not self.trainer.use_ray):
            raise ValueError(
                "actor_rollout_ref.rollout.placement=separate runs engine replicas (in-process, or SGLang/vLLM servers "
                "the replicas launch) as Ray actors on a pool of their own: it needs rollout.name=transformers, "
                "sglang or vllm and trainer.use_ray=true (got "
                f"rollout.name={rollout.name}, trainer.use_ray={self.trainer.use_ray})"
            )
        if rollout.placement == "separate" and rollout.name in ("sglang", "vllm") and \
                (rollout.engine_kwargs.get(rollout.name) or {}).get("urls"):
            raise ValueError(
                f"actor_rollout_ref.rollout.placement=separate has the rollout pool's actors launch the {rollout.name} "
                f"servers, but engine_kwargs.{rollout.name}.urls names running ones: drop urls, or set placement=driver"
            )
        tp = rollout.tensor_model_parallel_size
        if tp < 1:
            raise ValueError(f"actor_rollout_ref.rollout.tensor_model_parallel_size must be at least 1, got {tp}")
        if tp > 1 and rollout.name == "transformers":
            if rollout.placement in ("driver", "separate"):
                raise ValueError(
                    f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} splits an in-process replica over "
                    f"{tp} trainer ranks, which only the colocated placement has (got rollout.placement="
                    f"{rollout.placement}); set rollout.placement=colocated, or tensor_model_parallel_size=1")
            if rollout.placement == "colocated" and self.world_size % tp:  # `auto`: checked where it resolves
                raise ValueError(
                    f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} does not divide the "
                    f"{self.world_size} trainer ranks (trainer.nnodes x trainer.n_gpus_per_node): each replica is "
                    f"a group of {tp} consecutive ranks; use a divisor")
        return self

    # Derived values, kept out of the stored config so a dumped YAML round-trips unchanged.
    @property
    def use_critic(self) -> bool:
        if self.critic.enable is not None:
            return self.critic.enable
        return self.algorithm.adv_estimator == "gae"

    @property
    def use_reference(self) -> bool:
        return self.actor_rollout_ref.actor.use_kl_loss or self.algorithm.use_kl_in_reward

    @property
    def checkpoint_dir(self) -> str:
        t = self.trainer
        return t.default_local_dir or f"checkpoints/{t.project_name}/{t.experiment_name}"

    @property
    def world_size(self) -> int:
        return self.trainer.nnodes * self.trainer.n_gpus_per_node

    @property
    def colocated_rollout(self) -> bool:
        """Whether every trainer rank hosts an in-process engine replica (`rollout.placement`)."""
        rollout = self.actor_rollout_ref.rollout
        if rollout.name != "transformers" or not self.trainer.use_ray:
            return False
        if rollout.placement == "auto":
            import torch

            return self.trainer.device != "cpu" and torch.cuda.is_available()
        return rollout.placement == "colocated"

    @property
    def separate_rollout(self) -> bool:
        """Whether the engine replicas run as Ray actors on a rollout pool of their own (`rollout.placement`)."""
        return self.actor_rollout_ref.rollout.placement == "separate"
