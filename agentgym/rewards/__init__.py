"""Reward functions: checking answers and scoring episodes."""
