"""Trainer ranks (TrainWorker) and the groups that drive them locally or as Ray actors."""

from agentgym.trainer.workers.group import LocalWorkerGroup, RayWorkerGroup, start_role_groups, start_worker_group
from agentgym.trainer.workers.worker import TrainWorker

__all__ = ["LocalWorkerGroup", "RayWorkerGroup", "TrainWorker", "start_role_groups", "start_worker_group"]
