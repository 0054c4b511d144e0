"""Environments and the policy as services: the environment server (agentgym.services.environment) serves the
`Session` contract over HTTP; the gateway (agentgym.services.gateway) serves the policy as an OpenAI/Anthropic
compatible endpoint that records token-exact trajectories for agents written elsewhere."""
