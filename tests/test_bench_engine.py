"""The engine bench's measuring tools: FLOP counting of fused attention, argument capture, peaks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from clients.bench.engine import _capturing, _flop_counter, _lockstep, bf16_peak_tflops


def test_flop_counter_counts_fused_cpu_attention_and_linears() -> None:
    b, lq, lk, e, ev = 2, 64, 256, 32, 16
    q, k = torch.randn(b, 1, lq, e), torch.randn(b, 1, lk, e)
    v = torch.randn(b, 1, lk, e)
    lin = torch.nn.Linear(ev, e)
    counter = _flop_counter()
    with torch.inference_mode(), counter:
        F.scaled_dot_product_attention(q, k, v)
        lin(torch.randn(b, lk, ev))
    attention = 2 * b * lq * lk * e * 2  # q @ k^T and weights @ v, 2 FLOP per multiply-add
    linear = 2 * b * lk * ev * e
    assert counter.get_total_flops() == attention + linear


def test_capturing_records_calls_and_restores_forward() -> None:
    module = torch.nn.Linear(3, 2)
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []
    x = torch.randn(1, 3)
    with _capturing(module, calls):
        y = module(x)
    assert len(calls) == 1 and calls[0][0][0] is x
    assert torch.equal(y, module(x))
    assert "forward" not in module.__dict__  # the class's forward again
    module(x)
    assert len(calls) == 1
    with _capturing(module, None):
        module(x)
    assert len(calls) == 1


def test_bf16_peaks_by_device_name() -> None:
    assert bf16_peak_tflops("NVIDIA H200") == 989.0
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bf16_peak_tflops("NVIDIA L40") == 181.0
    assert bf16_peak_tflops("NVIDIA L4") == 121.0
    assert bf16_peak_tflops("NVIDIA GeForce GTX 1080") is None


def test_lockstep_alternates_who_goes_first_and_finishes_both() -> None:
    order: list[str] = []
    finished: list[str] = []

    def steps(name: str, n: int) -> Iterator[int]:
        for i in range(n):
            order.append(name)
            yield i
        finished.append(name)

    a, b = _lockstep(lambda: steps("a", 4), lambda: steps("b", 4), steps=3, repeats=2)
    assert a == b == [0, 1, 2, 0, 1, 2]
    # Who goes first alternates by step and by repeat; then each generator runs to its end
    # (its 4th step, not collected).
    first_run = ["a", "b", "b", "a", "a", "b", "a", "b"]
    second_run = ["b", "a", "a", "b", "b", "a", "a", "b"]
    assert order == [*first_run, *second_run]
    assert finished == ["a", "b", "a", "b"]


def test_streaming_steps_record_each_stage() -> None:
    """The per-stage table of ``bench --parts engine``: prepare, encode and propagate of every
    timed frame, which add up to the step's model and preprocessing times."""
    from clients.bench.engine import _streaming_steps
    from engine.models.sam2 import load_sam2
    from stream.config import ModelsConfig
    from stream.demo import DemoScene

    loaded = load_sam2(ModelsConfig(preset="tiny-random", device="cpu"))
    frames = [DemoScene(160, 120, 1, seed=1).render(i)[0] for i in range(3)]
    stages: dict[str, list[float]] = {}
    steps = list(_streaming_steps(loaded, frames, [(20.0, 20.0, 70.0, 70.0)], stages=stages))
    assert list(stages) == ["prepare", "encode", "propagate"]
    assert all(len(v) == 2 and min(v) > 0 for v in stages.values())
    for i, (model_s, prep_s) in enumerate(steps):
        assert model_s * 1e3 == pytest.approx(stages["encode"][i] + stages["propagate"][i])
        assert prep_s * 1e3 == pytest.approx(stages["prepare"][i])
