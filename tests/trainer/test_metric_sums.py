"""MetricSums: device scalars added without a host sync give the same weighted means as plain floats."""

import pickle

import torch

from agentgym.trainer.workers.metrics_acc import MetricSums


def test_device_values_match_float_values():
    host, device = MetricSums(), MetricSums()
    data = [(0.5, 3.0), (1.25, 5.0), (-2.0, 1.0)]
    for value, weight in data:
        host.add("m", value, weight)
        device.add_device("m", torch.tensor(value), torch.tensor(weight))
    host.sums["loss"][0] += 0.75 + 0.25  # sum-only entries, weighted once by the caller
    host.sums["loss"][1] += 0.5
    device.add_device_sum("loss", torch.tensor(0.75))
    device.add_device_sum("loss", torch.tensor(0.25, requires_grad=True) * 1.0)
    device.add("loss", 0.0, 0.5)
    host.add("empty", 3.0, 0.0)  # a weighted value of weight 0 (a fully masked micro-batch) adds nothing
    device.add_device("empty", torch.tensor(3.0), torch.tensor(0.0))
    assert device.mean() == host.mean()
    assert device.mean()["m"] == (0.5 * 3 + 1.25 * 5 - 2.0) / 9
    exported = device.export()
    assert pickle.loads(pickle.dumps(exported)) == host.export()


def test_merge_flushes_pending_values():
    part = MetricSums()
    part.add_device("x", torch.tensor(2.0), 4.0)
    total = MetricSums().merge(part)
    assert total.sums["x"] == [8.0, 4.0]
    assert MetricSums().merge(part.export()).mean() == {"x": 2.0}
