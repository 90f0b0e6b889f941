"""The engine room: data, metrics, fake-quant graphs, segments and caches, the evaluator and
its store."""
