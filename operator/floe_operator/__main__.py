"""Run the floe operator: ``python -m floe_operator [--namespace NS ...] [--peering NAME]``.

Uses the in-cluster config inside a pod, else the current kubeconfig context.
"""

from __future__ import annotations

import argparse
import os
import random

import kopf

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
        "--peering",
        metavar="NAME",
        help="coordinate with other operator replicas through this kopf peering object "
        "(default: standalone, no peering)",
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

    kopf.run(
        standalone=args.peering is None,
        peering_name=args.peering,
        # Replicas of equal priority freeze each other; distinct ones elect the highest as active.
        priority=random.randint(1, 2**31 - 1) if args.peering else 0,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )


if __name__ == "__main__":
    main()
