"""Trainer ranks (TrainWorker) and the groups that drive them locally or as Ray actors."""

from agentgym.trainer.workers.group import LocalWorkerGroup, RayWorkerGroup
from agentgym.trainer.workers.worker import TrainWorker

__all__ = ["LocalWorkerGroup", "RayWorkerGroup", "TrainWorker"]
