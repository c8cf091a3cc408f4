"""One Runtime shared by many threads, on every backend: each call gets its own inputs' outputs, never
another thread's, and nothing fails. (OpenVINO used to share one infer request: 'Infer Request is busy',
and outputs of other photos.)"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import edgesdk
from tests.conftest import smooth_batch

THREADS, RUNS = 8, 40
PAIRS = [("onnx-fp32", "onnxruntime"), ("onnx-int8", "onnxruntime"), ("onnx-int8", "openvino"),
         ("openvino-fp32", "openvino"), ("openvino-int8", "openvino"), ("tflite-fp32", "tflite"),
         ("tflite-int8", "tflite")]


@pytest.mark.parametrize("artifact,backend", PAIRS)
def test_shared_runtime_under_threads_matches_sequential(every_format, artifact, backend):
    inputs = [smooth_batch(1, (3, 32, 32), seed=100 + i) for i in range(THREADS)]
    with edgesdk.Runtime(every_format, artifact=artifact, backend=backend, threads=1) as rt:
        expected = [rt.run(x) for x in inputs]
        assert len({int(e.argmax()) for e in expected}) > 1 or len({e.tobytes() for e in expected}) == THREADS

        def worker(i: int) -> list[int]:
            wrong = 0
            for _ in range(RUNS):
                out = rt.run(inputs[i])
                wrong += int(not np.array_equal(out, expected[i]))
            return [i, wrong]

        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(worker, range(THREADS)))
    assert all(wrong == 0 for _, wrong in results), results  # any error above would have raised here


def test_throughput_requests_in_order_under_threads(every_format):
    """OpenVINO's async path, called from several threads at once, keeps each caller's order."""
    inputs = [smooth_batch(1, (3, 32, 32), seed=200 + i) for i in range(6)]
    with edgesdk.Runtime(every_format, artifact="openvino-fp32", mode="throughput") as rt:
        expected = [rt.run(x) for x in inputs]

        def batch(shift: int) -> bool:
            order = inputs[shift:] + inputs[:shift]
            outs = rt.run_many(order)
            return all(np.allclose(o[0], e, atol=1e-5) for o, e in zip(outs, expected[shift:] + expected[:shift]))

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(batch, range(4)))
