"""How a block's sub-blocks run: dispatch by mode (dense, grouped, sparse), forced gates, and
path autotuning. Knows no method: gates that run their blocks their own way say so through
:meth:`dmnn.Gate.execute` and reuse :func:`dmnn.execution.sparse.run_rows`."""
