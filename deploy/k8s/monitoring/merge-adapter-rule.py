"""Add (or update) the avg_time_queue_us rule in a prometheus-adapter ConfigMap, keeping every other rule.

    kubectl -n monitoring get configmap prometheus-adapter -o yaml \
      | .venv/bin/python deploy/k8s/monitoring/merge-adapter-rule.py \
      | kubectl replace -f -
    kubectl -n monitoring rollout restart deployment prometheus-adapter   # it reads its rules at start only

Reads the ConfigMap (YAML or JSON) on stdin and writes it back on stdout with the rule of
prometheus-adapter-rule.yaml in `data["config.yaml"]["rules"]`: appended when no rule produces the same
metric name, replaced in place when one does (so running it twice changes nothing). Other rules and the
other sections of the configuration (externalRules, resourceRules) are left as they are. Needs PyYAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

RULE_FILE = Path(__file__).resolve().with_name("prometheus-adapter-rule.yaml")
CONFIG_KEY = "config.yaml"


def our_rules() -> list[dict]:
    return yaml.safe_load(RULE_FILE.read_text())["rules"]


def merge_rules(config: dict, rules: list[dict]) -> dict:
    """`config` (the adapter's configuration) with `rules` merged into its `rules` list by metric name."""
    merged = dict(config)
    existing = list(merged.get("rules") or [])
    for rule in rules:
        name = rule["name"]["as"]
        positions = [i for i, r in enumerate(existing) if (r.get("name") or {}).get("as") == name]
        if positions:
            existing[positions[0]] = rule
        else:
            existing.append(rule)
    merged["rules"] = existing
    return merged


def merge_config_map(config_map: dict, rules: list[dict], key: str = CONFIG_KEY) -> dict:
    if config_map.get("kind") != "ConfigMap":
        raise ValueError(f"expected a ConfigMap, got {config_map.get('kind')!r}")
    data = config_map.get("data") or {}
    if key not in data:
        raise ValueError(f"the ConfigMap has no data[{key!r}]; pass --key with the file prometheus-adapter reads")
    config = yaml.safe_load(data[key]) or {}
    updated = dict(config_map)
    updated["data"] = {**data, key: yaml.safe_dump(merge_rules(config, rules), sort_keys=False, width=110)}
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", default=CONFIG_KEY, help="data key holding the adapter configuration")
    args = parser.parse_args(argv)
    try:
        updated = merge_config_map(yaml.safe_load(sys.stdin.read()) or {}, our_rules(), args.key)
    except (ValueError, yaml.YAMLError) as exc:
        print(f"merge-adapter-rule: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(updated, sort_keys=False, width=110))
    return 0


if __name__ == "__main__":
    sys.exit(main())
