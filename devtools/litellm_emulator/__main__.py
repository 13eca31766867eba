"""CLI: ``python -m devtools.litellm_emulator --port N --master-key sk-...``.

Prints ``LITELLM_EMULATOR_READY url=http://127.0.0.1:N`` once it accepts
connections (``--port 0`` picks a free port), then serves until killed.
The fault flags build one rule scoped by ``--fault-path``/``--fault-method``;
richer setups go through ``PUT /_emulator/faults`` or ``--faults-json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from devtools.litellm_emulator.core import EmulatorSettings
from devtools.litellm_emulator.costs import PROFILES, cost_model
from devtools.litellm_emulator.faults import FaultConfig, FaultRule
from devtools.litellm_emulator.server import serve_forever


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.litellm_emulator", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--master-key", default="sk-emulator-master-key")
    parser.add_argument(
        "--no-auto-add-proxy-admin",
        action="store_true",
        help="disable_auto_add_proxy_admin_to_teams",
    )
    parser.add_argument(
        "--keep-keys-on-member-delete",
        action="store_true",
        help="older LiteLLM: member_delete keeps the keys",
    )
    parser.add_argument(
        "--licensed", action="store_true", help="act as an enterprise-licensed proxy"
    )
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        help="a fake model served on /v1/models and /chat/completions (repeatable)",
    )
    faults = parser.add_argument_group("faults (one rule; see also PUT /_emulator/faults)")
    faults.add_argument("--latency-ms", type=float, default=0.0)
    faults.add_argument("--jitter-ms", type=float, default=0.0)
    faults.add_argument("--error-rate", type=float, default=0.0)
    faults.add_argument("--error-status", type=int, choices=(500, 502, 503), default=503)
    faults.add_argument("--rate-limit-rate", type=float, default=0.0)
    faults.add_argument("--retry-after", type=int, default=1)
    faults.add_argument("--drop-rate", type=float, default=0.0)
    faults.add_argument("--fault-path", default="*", help="glob, or regex with --fault-regex")
    faults.add_argument("--fault-regex", action="store_true")
    faults.add_argument("--fault-method", default=None)
    faults.add_argument("--seed", type=int, default=None)
    faults.add_argument("--faults-json", type=Path, default=None, help="a FaultConfig JSON file")
    parser.add_argument(
        "--costs", default="off",
        help="cost model: 'off', a named profile (" + ", ".join(PROFILES) + ") or a CostModel "
        "JSON file; see also PUT /_emulator/costs",
    )
    parser.add_argument("--log-level", default="warning")
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    if args.faults_json is not None:
        config = FaultConfig.model_validate(json.loads(args.faults_json.read_text()))
    else:
        rules: list[FaultRule] = []
        if any(
            (args.latency_ms, args.jitter_ms, args.error_rate, args.rate_limit_rate, args.drop_rate)
        ):
            rules.append(
                FaultRule(
                    path=args.fault_path,
                    match="regex" if args.fault_regex else "glob",
                    method=args.fault_method,
                    latency_ms=args.latency_ms,
                    jitter_ms=args.jitter_ms,
                    error_rate=args.error_rate,
                    error_status=args.error_status,
                    rate_limit_rate=args.rate_limit_rate,
                    retry_after_s=args.retry_after,
                    drop_rate=args.drop_rate,
                )
            )
        config = FaultConfig(seed=args.seed, rules=rules)
    return EmulatorSettings(
        master_key=args.master_key,
        auto_add_proxy_admin=not args.no_auto_add_proxy_admin,
        delete_keys_on_member_delete=not args.keep_keys_on_member_delete,
        licensed=args.licensed,
        faults=config,
        costs=cost_model(args.costs),
        **({"models": tuple(args.model)} if args.model else {}),
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    serve_forever(
        settings_from_args(args), host=args.host, port=args.port, log_level=args.log_level
    )


if __name__ == "__main__":
    main()
