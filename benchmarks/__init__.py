"""Speed and memory benchmarks of jaxseq against torch (padded, packed) and Flax linen.

``python -m benchmarks.run --out DIR`` writes ``results.md`` and ``results.json``;
``python -m benchmarks.long_sequence`` measures the peak memory of a T=100,000 step.
"""
