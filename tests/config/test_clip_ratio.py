"""Clip-ratio defaults follow verl's actor.yaml: low and high are 0.2 on their own, clip_ratio alone does not move them."""

import warnings

import pytest

from agentgym.config.schema import ActorConfig


def test_defaults_are_verls():
    a = ActorConfig()
    assert (a.clip_ratio, a.clip_ratio_low, a.clip_ratio_high) == (0.2, 0.2, 0.2)


def test_clip_ratio_alone_warns_and_leaves_low_high():
    with pytest.warns(UserWarning, match=r"clip_ratio_low=0.3"):
        a = ActorConfig(clip_ratio=0.3)
    assert (a.clip_ratio_low, a.clip_ratio_high) == (0.2, 0.2)


def test_no_warning_when_bounds_set_or_follow_clip_ratio():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ActorConfig(clip_ratio=0.3, clip_ratio_low=0.3, clip_ratio_high=0.3)
        ActorConfig(clip_ratio=0.3, clip_ratio_low=None, clip_ratio_high=None)
        ActorConfig(clip_ratio_high=0.28)
