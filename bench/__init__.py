"""The benchmark harness of durable-proxy (``python -m bench``, ``make bench``).

It measures durable-proxy on its embedded SQLite store at full durability, and
the 3-step workload on PostgreSQL with one and two proxy instances
(``bench.postgres``), and runs the same 0-step and 3-step workloads, through
the same load driver, on Restate and DBOS. See ``bench.cli`` for the options
and ``bench.ours`` for the scenarios.
"""
