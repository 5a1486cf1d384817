#!/usr/bin/env python3
"""Lint and render the Helm chart with real Helm (the v4 SDK) for tests/chart.rs.

    helm_render.py lint CHART
    helm_render.py render CHART --name NAME --namespace NS [--values JSON]

Both print one JSON document on stdout. `render` validates every rendered
object against the Kubernetes 1.33 schemas (strict: unknown fields fail) and
prints {"objects": [{"template": ..., "object": ...}]} or, when Helm rejects
the values or a template fails, {"error": "<Helm's message>"}. Exit status 3
means the Python packages are missing.
"""

import argparse
import json
import sys

INSTALL = "./test.sh (into target/test-venv), or pip install helm-python-sdk kubernetes-validate"

try:
    import helm_python
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as e:
    print(f"missing Python package ({e}); install with: {INSTALL}", file=sys.stderr)
    sys.exit(3)

KUBE_VERSION = "1.33.0"

# kubernetes-validate knows only built-in kinds. The prometheus-operator CRDs are
# not ours to vendor, so the fields this chart sets are checked against these
# subsets of their schemas.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": {"type": "object"}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}

PROMETHEUS_DURATION = "^([0-9]+(ms|s|m|h|d|w|y))+$"

PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": PROMETHEUS_DURATION},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr"],
                                    "properties": {
                                        "alert": {"type": "string", "minLength": 1},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": PROMETHEUS_DURATION},
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

OPERATOR_SCHEMAS = {
    "ServiceMonitor": SERVICE_MONITOR_SCHEMA,
    "PrometheusRule": PROMETHEUS_RULE_SCHEMA,
}


def lint(args):
    report = helm_python.lint(args.chart, strict=True, kube_version=f"v{KUBE_VERSION}")
    print(json.dumps(report))


def validate(obj, template):
    schema = OPERATOR_SCHEMAS.get(obj.get("kind"))
    if schema is not None:
        jsonschema.validate(obj, schema)
        return
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        name = obj.get("metadata", {}).get("name")
        raise SystemExit(
            f"{template}: {obj.get('kind')} {name} is not a valid 1.33 object: "
            f"{e.message} at {'/'.join(str(p) for p in e.path)}"
        )


def render(args):
    values = json.loads(args.values)
    chart = helm_python.Chart.load(args.chart)
    try:
        rendered = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
    except (helm_python.HelmValuesError, helm_python.HelmRenderError) as e:
        print(json.dumps({"error": str(e)}))
        return
    objects = []
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            validate(doc, template)
            objects.append({"template": template, "object": doc})
    notes = next((t for name, t in rendered.items() if name.endswith("NOTES.txt")), "")
    print(json.dumps({"objects": objects, "notes": notes}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("lint")
    p.add_argument("chart")
    p.set_defaults(func=lint)
    p = sub.add_parser("render")
    p.add_argument("chart")
    p.add_argument("--name", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--values", default="{}", help="values as a JSON object")
    p.set_defaults(func=render)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
