"""The multi-host rehearsal rig: a deployment on one machine in network namespaces.

    python -m bench.rig [--scenario soak] [--viewers 60] [--duration 30] [-- LOADTEST OPTIONS]

Builds a bridge and one namespace per host — ``lb`` (nginx), ``app1..3`` (``live-server
--workers N``), ``redis`` (AOF everysec), ``pg`` (a private PostgreSQL cluster) and ``load``
(the load generator, which can reach only the balancer) — drives a ``live.loadtest`` scenario
through the balancer, kills one app host with -9 and restarts Redis from its AOF mid-run, and
requires the scenario's server-side verdict and ``live reconcile`` to stay green. Everything
is torn down at the end, on failure and on Ctrl-C; a JSON record of the run is written.
See docs/operations.md, "Rehearse a deployment on one machine (network namespaces)".

The entry points are ``bench.rig.run.run_rig(RigConfig(...))`` and ``python -m bench.rig``; this
package module imports nothing, so ``python -m bench.rig.load`` (run inside the load generator's
namespace) loads only what it needs.
"""
