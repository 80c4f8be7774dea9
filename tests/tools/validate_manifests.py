"""Validates rendered manifests (multi-document YAML on stdin) against the Kubernetes
OpenAPI schemas bundled with the kubernetes-validate package, strictly (unknown fields are
errors), offline. Kinds of other projects' CRDs (Prometheus Operator monitors) have no
bundled schema: they are listed as skipped, and the caller decides whether that is fine.

usage: python3 validate_manifests.py KUBERNETES_VERSION... < manifests.yaml
Prints one line per document: "valid KIND NAME", "skipped KIND NAME" or
"invalid KIND NAME: WHY"; exits 1 when any document is invalid.
"""

import sys

import kubernetes_validate
import yaml

SKIPPED_GROUPS = ("monitoring.coreos.com/",)


def main() -> int:
    versions = sys.argv[1:]
    if not versions:
        print("usage: validate_manifests.py KUBERNETES_VERSION...", file=sys.stderr)
        return 2
    failed = False
    for doc in yaml.safe_load_all(sys.stdin):
        if doc is None:
            continue
        kind = doc.get("kind", "?")
        name = (doc.get("metadata") or {}).get("name", "?")
        if str(doc.get("apiVersion", "")).startswith(SKIPPED_GROUPS):
            print(f"skipped {kind} {name}")
            continue
        problems = []
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{version}: {e.message} at {list(e.absolute_path)}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                problems.append(f"{version}: {e}")
        if problems:
            failed = True
            print(f"invalid {kind} {name}: {'; '.join(problems)}")
        else:
            print(f"valid {kind} {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
