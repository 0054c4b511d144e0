"""The policy as an OpenAI/Anthropic-compatible endpoint recording token-exact trajectories per session:
`python3 -m agentgym.services.gateway --config RUN.yaml`. The external-agent rollout (training an agent written
elsewhere) is agentgym.services.gateway.rollout:make_rollout."""

from agentgym.services.gateway.recorder import RecorderConfig, SessionRecord, TrajectoryRecorder
from agentgym.services.gateway.server import Gateway, GatewayConfig

__all__ = ["Gateway", "GatewayConfig", "RecorderConfig", "SessionRecord", "TrajectoryRecorder"]
