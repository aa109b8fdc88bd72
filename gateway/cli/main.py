"""`zapgate` command line: serve, manage API keys, and talk to a running server."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from zapgate.gateway.cli import health as cli_health
from zapgate.gateway.cli import instances as cli_instances
from zapgate.gateway.cli import keys as cli_keys
from zapgate.gateway.cli import simulated_whatsapp as cli_simulated_whatsapp
from zapgate.gateway.cli import vault as cli_vault
from zapgate.gateway.cli import webhooks as cli_webhooks
from zapgate.gateway.cluster.settings import (
    DEFAULT_HANDOVER_BATCH,
    DEFAULT_LEASE_TTL_SECONDS,
    DEFAULT_MAX_INSTANCES,
    MAX_INSTANCES_LIMIT,
    MIN_SECRET_CHARS,
    ClusterSettings,
    generated_node_id,
)
from zapgate.gateway.config import (
    DEFAULT_ENGINE_WORKERS,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_HTTP_LISTEN,
    DEFAULT_LISTEN,
    ENGINES,
    ServeConfig,
    TlsConfig,
    data_dir_from_env,
    database_url_from_env,
)
from zapgate.gateway.connections.backoff import Backoff
from zapgate.gateway.connections.master_key import ENV_KEY
from zapgate.gateway.events.log import Retention
from zapgate.gateway.ops.listen_errors import CannotListen
from zapgate.gateway.ops.logs import configure_logging
from zapgate.gateway.ops.metrics_http import parse_listen
from zapgate.gateway.store.single_node import StoreInUse
from zapgate.gateway.webhooks.timings import WebhookSettings
from zapgate.sessions.log_lines import LOG_FORMATS
from zapgate.sessions.runloop import run_async
from zapgate.sessions.sim_engine import SimTimings


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return int(args.run(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zapgate", description="Self-hosted WhatsApp gateway")
    commands = parser.add_subparsers(title="commands")
    serve = commands.add_parser("serve", help="run the gRPC server")
    cli_keys.add_store_flags(serve)
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help="host:port (default %(default)s)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate; enables TLS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", type=Path, help="require client certs signed by this CA")
    serve.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help="seconds in-flight calls get to finish on SIGTERM (default %(default)s)",
    )
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text, or json: one object per line (default $ZAPGATE_LOG_FORMAT, else text)",
    )
    serve.add_argument(
        "--metrics-listen",
        help="serve Prometheus metrics at http://HOST:PORT/metrics; a bare port listens on "
        "127.0.0.1 (default $ZAPGATE_METRICS_LISTEN, else off)",
    )
    add_http_flags(serve)
    add_engine_flags(serve)
    add_cluster_flags(serve)
    serve.set_defaults(run=run_serve)
    cli_keys.add_commands(commands)
    cli_instances.add_commands(commands)
    cli_health.add_commands(commands)
    cli_vault.add_commands(commands)
    cli_webhooks.add_commands(commands)
    cli_simulated_whatsapp.add_commands(commands)
    return parser


def add_http_flags(serve: argparse.ArgumentParser) -> None:
    http = serve.add_argument_group("HTTP port (Connect and gRPC-Web: docs/http.md)")
    http.add_argument(
        "--http-listen",
        help="host:port of the HTTP port; a bare port listens on 127.0.0.1; `off` turns it "
        f"off (default $ZAPGATE_HTTP_LISTEN, else {DEFAULT_HTTP_LISTEN})",
    )
    http.add_argument(
        "--http-allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages from this origin (https://app.example.com) call the HTTP port (CORS); "
        "repeatable; `*` for any (default $ZAPGATE_HTTP_ALLOWED_ORIGINS, comma-separated, "
        "else none: same-origin pages only)",
    )


def http_listen(args: argparse.Namespace) -> str | None:
    listen = args.http_listen or os.environ.get("ZAPGATE_HTTP_LISTEN") or DEFAULT_HTTP_LISTEN
    if listen.lower() == "off":
        return None
    try:
        parse_listen(listen, flag="--http-listen")
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return listen


def http_allowed_origins(args: argparse.Namespace) -> tuple[str, ...]:
    from_env = os.environ.get("ZAPGATE_HTTP_ALLOWED_ORIGINS", "").split(",")
    origins = args.http_allow_origin or from_env
    return tuple(o.strip() for o in origins if o.strip())


def add_engine_flags(serve: argparse.ArgumentParser) -> None:
    engine = serve.add_argument_group("engine")
    engine.add_argument(
        "--engine",
        choices=ENGINES,
        default="neonize",
        help="neonize (real WhatsApp) or sim (built-in simulator)",
    )
    engine.add_argument(
        "--engine-workers",
        type=int,
        default=DEFAULT_ENGINE_WORKERS,
        help="engine worker processes (default %(default)s)",
    )
    engine.add_argument(
        "--runtime-dir",
        type=Path,
        help="where plaintext session stores live (default: $ZAPGATE_RUNTIME_DIR, else a "
        "private tmpfs dir)",
    )
    backoff = Backoff()
    engine.add_argument("--reconnect-base-seconds", type=float, default=backoff.base_seconds)
    engine.add_argument("--reconnect-cap-seconds", type=float, default=backoff.cap_seconds)
    engine.add_argument(
        "--reconnect-stable-seconds",
        type=float,
        default=backoff.stable_after_seconds,
        help="a connection this old resets the backoff",
    )
    vault = serve.add_argument_group("session encryption")
    vault.add_argument(
        "--master-key-file",
        type=Path,
        help="file with the base64 master key (default: $ZAPGATE_MASTER_KEY, "
        "else <data dir>/master.key, generated on first start)",
    )
    vault.add_argument(
        "--previous-master-key-file",
        type=Path,
        action="append",
        default=[],
        help="an older master key still needed to open some snapshots",
    )
    retention = Retention()
    events = serve.add_argument_group("event log")
    events.add_argument(
        "--event-retention-days",
        type=float,
        default=retention.max_age_seconds / 86400,
        help="drop events older than this (default %(default)s)",
    )
    events.add_argument(
        "--event-retention-count",
        type=int,
        default=retention.max_events,
        help="keep at most this many events (default %(default)s)",
    )
    add_webhook_flags(serve)
    sim = serve.add_argument_group("simulator (with --engine sim)")
    sim.add_argument(
        "--sim-server",
        default=os.environ.get("ZAPGATE_SIM_SERVER") or None,
        metavar="HOST:PORT",
        help="attach every simulator engine to this `zapgate simulated-whatsapp` server (one "
        "phone side for every node; default $ZAPGATE_SIM_SERVER, else each worker keeps its own)",
    )
    for timing in dataclasses.fields(SimTimings):
        default = getattr(SimTimings(), timing.name)
        sim.add_argument(
            f"--sim-{timing.name.replace('_', '-')}",
            dest=f"sim_{timing.name}",
            type=type(default),
            default=default,
            help="default %(default)s",
        )


def add_cluster_flags(serve: argparse.ArgumentParser) -> None:
    cluster = serve.add_argument_group("cluster (several nodes on one PostgreSQL)")
    cluster.add_argument(
        "--cluster",
        action="store_true",
        default=os.environ.get("ZAPGATE_CLUSTER", "") not in ("", "0", "false"),
        help="run as one node of several sharing the PostgreSQL database: instances are "
        "owned through leases and taken over when a node dies (default $ZAPGATE_CLUSTER)",
    )
    cluster.add_argument(
        "--node-id",
        default=os.environ.get("ZAPGATE_NODE_ID") or None,
        help="this node's name (default $ZAPGATE_NODE_ID, else <hostname>-<random>)",
    )
    cluster.add_argument(
        "--node-address",
        default=os.environ.get("ZAPGATE_NODE_ADDRESS", ""),
        help="host:port other nodes and clients reach this node at (default "
        "$ZAPGATE_NODE_ADDRESS, else the listen address)",
    )
    cluster.add_argument(
        "--lease-ttl",
        type=float,
        default=DEFAULT_LEASE_TTL_SECONDS,
        help="seconds an instance's lease lasts unrenewed; a dead node's instances are "
        "connected elsewhere within twice this (default %(default)s)",
    )
    cluster.add_argument(
        "--max-instances",
        type=int,
        default=DEFAULT_MAX_INSTANCES,
        help="instances this node owns at most (default %(default)s)",
    )
    cluster.add_argument(
        "--cluster-secret",
        default=os.environ.get("ZAPGATE_CLUSTER_SECRET", ""),
        help="secret every node shares, proving a forwarded call comes from a node (default "
        "$ZAPGATE_CLUSTER_SECRET; required with --cluster; prefer the variable: arguments "
        "are visible in the process list)",
    )
    cluster.add_argument(
        "--handover-batch",
        type=int,
        default=DEFAULT_HANDOVER_BATCH,
        help="instances a node hands over to others at a time, when a node joins or this "
        "one drains; 0: never (a joining node gets only new and orphaned instances, a "
        "stopping node releases its instances) (default %(default)s)",
    )


def cluster_settings(args: argparse.Namespace) -> ClusterSettings | None:
    if not args.cluster:
        return None
    if args.lease_ttl <= 0 or not 0 < args.max_instances <= MAX_INSTANCES_LIMIT:
        raise SystemExit(
            f"--lease-ttl must be positive and --max-instances between 1 and {MAX_INSTANCES_LIMIT}"
        )
    if args.handover_batch < 0:
        raise SystemExit("--handover-batch must be 0 (no hand-overs) or more")
    if not (args.master_key_file or os.environ.get(ENV_KEY)):
        raise SystemExit(
            "--cluster needs the master key every node shares: give it with "
            f"--master-key-file or ${ENV_KEY} (a node never generates one of its own)"
        )
    if len(args.cluster_secret) < MIN_SECRET_CHARS:
        raise SystemExit(
            "--cluster needs the secret every node shares for forwarding calls: give at least "
            f"{MIN_SECRET_CHARS} characters with $ZAPGATE_CLUSTER_SECRET or --cluster-secret"
        )
    return ClusterSettings(
        node_id=args.node_id or generated_node_id(),
        address=args.node_address,
        lease_ttl_seconds=args.lease_ttl,
        max_instances=args.max_instances,
        secret=args.cluster_secret,
        handover_batch=args.handover_batch,
    )


def add_webhook_flags(serve: argparse.ArgumentParser) -> None:
    defaults = WebhookSettings()
    webhooks = serve.add_argument_group("webhooks")
    webhooks.add_argument(
        "--webhook-allow-private",
        action="store_true",
        help="allow webhooks to private, loopback and link-local addresses (default: refused)",
    )
    for name, help_text in (
        ("request_timeout_seconds", "seconds a receiver has to answer one delivery"),
        ("retry_base_seconds", "first retry within this many seconds (doubling, full jitter)"),
        ("retry_cap_seconds", "retries at most this far apart"),
        ("failing_after_seconds", "a webhook failing this long stops (FAILING)"),
    ):
        webhooks.add_argument(
            f"--webhook-{name.replace('_', '-')}",
            dest=f"webhook_{name}",
            type=float,
            default=getattr(defaults, name),
            help=help_text + " (default %(default)s)",
        )
    webhooks.add_argument(
        "--webhook-max-concurrent",
        type=int,
        default=defaults.max_concurrent,
        help="deliveries in flight over all webhooks (default %(default)s)",
    )
    webhooks.add_argument(
        "--webhook-server-url",
        default=defaults.server_url,
        help="this gateway's public URL, sent as `server_url` in Evolution-format webhooks",
    )


def webhook_settings(args: argparse.Namespace) -> WebhookSettings:
    return WebhookSettings(
        request_timeout_seconds=args.webhook_request_timeout_seconds,
        retry_base_seconds=args.webhook_retry_base_seconds,
        retry_cap_seconds=args.webhook_retry_cap_seconds,
        failing_after_seconds=args.webhook_failing_after_seconds,
        max_concurrent=max(1, args.webhook_max_concurrent),
        allow_private=args.webhook_allow_private,
        server_url=args.webhook_server_url,
    )


def run_serve(args: argparse.Namespace) -> int:
    from zapgate.gateway.ops.file_modes import restrict_umask
    from zapgate.gateway.server import serve

    restrict_umask()  # before anything creates a file
    log_format = args.log_format or os.environ.get("ZAPGATE_LOG_FORMAT") or "text"
    if log_format not in LOG_FORMATS:
        raise SystemExit(f"log format must be one of: {', '.join(LOG_FORMATS)}")
    configure_logging(args.log_level, log_format)
    metrics_listen = args.metrics_listen or os.environ.get("ZAPGATE_METRICS_LISTEN") or None
    if metrics_listen:
        try:
            parse_listen(metrics_listen)
        except ValueError as error:
            raise SystemExit(str(error)) from None
    runtime_dir = args.runtime_dir or os.environ.get("ZAPGATE_RUNTIME_DIR") or None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    if args.sim_server and args.engine != "sim":
        raise SystemExit("--sim-server needs --engine sim")
    if args.tls_client_ca and not args.tls_cert:
        raise SystemExit("--tls-client-ca needs --tls-cert and --tls-key")
    tls = TlsConfig(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    config = ServeConfig(
        log_format=log_format,
        listen=args.listen,
        data_dir=data_dir_from_env(args.data_dir),
        database_url=database_url_from_env(args.database_url),
        tls=tls,
        grace_seconds=args.grace,
        engine=args.engine,
        engine_workers=max(1, args.engine_workers),
        runtime_dir=Path(runtime_dir) if runtime_dir else None,
        metrics_listen=metrics_listen,
        http_listen=http_listen(args),
        http_allowed_origins=http_allowed_origins(args),
        sim_server=args.sim_server,
        sim_timings=SimTimings(
            **{t.name: getattr(args, f"sim_{t.name}") for t in dataclasses.fields(SimTimings)}
        ),
        event_retention=Retention(
            max_age_seconds=args.event_retention_days * 86400,
            max_events=max(1, args.event_retention_count),
        ),
        master_key_file=args.master_key_file,
        previous_master_key_files=tuple(args.previous_master_key_file),
        backoff=Backoff(
            args.reconnect_base_seconds, args.reconnect_cap_seconds, args.reconnect_stable_seconds
        ),
        webhooks=webhook_settings(args),
        cluster=cluster_settings(args),
    )
    try:
        run_async(serve(config))
    except (StoreInUse, CannotListen) as error:
        raise SystemExit(f"zapgate: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
