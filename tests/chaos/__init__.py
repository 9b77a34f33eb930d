"""The chaos suite: seeded random handler programs against real processes while a nemesis kills them.

* ``programs``: the generator of programs, and what each must produce (result, journal layout);
* ``app``: the service that interprets them (``Chaos/run``, the ``Counter`` object) and writes the ledger;
* ``nemesis``: the proxy and handler processes, and the faults (kill -9 and restart, SIGSTOP and SIGCONT);
* ``run``: the driver (``python -m tests.chaos.run``) and ``run_chaos``;
* ``checker``: what must hold once everything drained, and the figures of the run;
* ``test_chaos``: the CI run (``make chaos``); ``make soak N=5000`` runs a longer one.
"""
