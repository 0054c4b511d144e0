"""Pure tensor functions of RL post-training: advantages, losses, KL. No model, no distributed state."""

from agentgym.trainer.algorithms.advantages import (
    discounted_returns,
    gae_advantage,
    gpg_advantage,
    grpo_outcome_advantage,
    grpo_passk_advantage,
    opo_advantage,
    place_outcome_rewards,
    reinforce_plus_plus_advantage,
    reinforce_plus_plus_baseline_advantage,
    remax_advantage,
    rloo_advantage,
)
from agentgym.trainer.algorithms.estimators import (
    ADV_ESTIMATOR_FNS,
    AdvantageInputs,
    get_adv_estimator,
    needs_greedy_baseline,
    register_adv_estimator,
)
from agentgym.trainer.algorithms.kl import (
    AdaptiveKLController,
    FixedKLController,
    apply_kl_in_reward,
    kl_penalty,
    make_kl_controller,
)
from agentgym.trainer.algorithms.losses import (
    LOSS_AGG_MODES,
    PolicyLossOutput,
    agg_loss,
    compute_policy_loss,
    compute_value_loss,
    entropy_from_logits,
    logprobs_from_logits,
)
from agentgym.trainer.algorithms.overlong import overlong_penalty
from agentgym.trainer.algorithms.policy_losses import (
    POLICY_LOSSES,
    PolicyLossSettings,
    get_policy_loss,
    register_policy_loss,
)
from agentgym.trainer.algorithms.rollout_correction import ROLLOUT_IS_LEVELS, rollout_is_weights
from agentgym.trainer.algorithms.turn_credit import (
    TurnLayout,
    discounted_turn_grpo_advantage,
    turn_grpo_advantage,
    turn_layout,
    turn_returns,
)
from agentgym.trainer.algorithms.masked import masked_mean, masked_sum, masked_var, masked_whiten

__all__ = [name for name in dir() if not name.startswith("_")]
