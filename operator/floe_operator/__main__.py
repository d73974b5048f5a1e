"""Run the floe operator: ``python -m floe_operator [--namespace NS ...] [--leader-elect]``.

Uses the in-cluster config inside a pod, else the current kubeconfig context.
"""

from __future__ import annotations

import argparse
import functools
import os

import kopf

from floe_operator import leader, metrics
from floe_operator.settings import OperatorSettings

DEFAULT_LIVENESS = f"http://0.0.0.0:{os.environ.get('FLOE_HEALTH_PORT', '8080')}/healthz"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m floe_operator",
        description="floe operator: fine-tunes T5 models on Kubernetes and deploys them to Snowflake.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; globs allowed). Projects, being cluster-scoped, "
        "are followed either way.",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch the whole cluster (the default)")
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="reconcile only while holding a coordination.k8s.io Lease, so that of several replicas one "
        "leads and the others stand by (default: reconcile at once, as the only replica)",
    )
    parser.add_argument(
        "--lease-name",
        default=leader.DEFAULT_LEASE_NAME,
        help=f"the Lease's name (default {leader.DEFAULT_LEASE_NAME})",
    )
    parser.add_argument(
        "--lease-namespace",
        help="the Lease's namespace (default: the operator's own: $POD_NAMESPACE, the pod's ServiceAccount "
        "namespace, else the kubeconfig context's)",
    )
    parser.add_argument(
        "--liveness",
        default=DEFAULT_LIVENESS,
        help="liveness probe endpoint (default http://0.0.0.0:$FLOE_HEALTH_PORT/healthz, port 8080 when unset)",
    )
    parser.add_argument("--log-format", choices=["json", "plain"], default="json", help="log format (default json)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    import floe_operator.handlers  # noqa: F401  (registers the handlers)

    run = functools.partial(
        kopf.run,
        standalone=True,  # replicas coordinate through the Lease, not kopf's peering
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )
    if not args.leader_elect:
        run()
        return
    # A standby is a replica too: Prometheus scrapes it (process metrics, no floe series) before it leads.
    metrics.serve(OperatorSettings.from_env().metrics_port)
    leader.lead(
        run,
        name=args.lease_name,
        namespace=args.lease_namespace or leader.own_namespace(),
        identity=leader.own_identity(),
        liveness_endpoint=args.liveness,
    )


if __name__ == "__main__":
    main()
