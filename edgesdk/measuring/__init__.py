"""Measuring: latency benchmarks, per-stage latency logs, accuracy on labelled data, the HTML report."""
