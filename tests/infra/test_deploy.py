"""The deploy recipes (infra/k8s, infra/compose.yaml, infra/Dockerfile) against the code they deploy.

No kubectl or kustomize here: the manifests are parsed, and every command they run is parsed by the real CLI.
docs/settings.md must list every setting the code reads: the Settings fields, and every AGL_*/OTEL_* name written
in the source (so a new `os.environ["AGL_X"]` breaks this test until it is documented).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from agl.cli import build_parser
from agl.config import Settings
from agl.stack.projection_processes import PROJECTION_WORKERS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
COMPOSE = ROOT / "infra" / "compose.yaml"
SETTINGS_DOC = ROOT / "docs" / "settings.md"
#: Where settings are read: the installed packages, the scripts, and the deploy scripts of infra/.
SOURCE_DIRS = ("agl", "core", "consumers", "producers", "projections", "knowledge", "schemas", "scripts", "infra")
NAME = re.compile(r"\b(?:AGL|OTEL)_[A-Z0-9_]*[A-Z0-9]\b")
NO_PROBE = "agl.dev/no-liveness-probe"


# -- loading ---------------------------------------------------------------------------------------------------
def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), f"{path}: every document is a mapping"
            yield path, doc


def of_kind(kind: str, *, under: Path = K8S / "base") -> list[dict[str, Any]]:
    return [doc for path, doc in manifests() if doc.get("kind") == kind and path.is_relative_to(under)]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return result


def argv(container: dict[str, Any]) -> list[str]:
    # Kubernetes expands $(VAR) from the container's env in args; any value will do for parsing.
    words = [*container.get("command", []), *container.get("args", [])]
    return [re.sub(r"\$\(([A-Z_]+)\)", "x", w) for w in words]


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"k8s_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_command(words: list[str]) -> argparse.Namespace:
    """Parse a manifest's command with the parser that will run it; argparse's SystemExit fails the test."""
    if words[0] == "agl":
        return build_parser().parse_args(words[1:])
    assert words[0] == "python", f"{words}: runs agl or one of infra/k8s/base's scripts"
    mounted = Path(words[1])
    assert mounted.parent == Path("/opt/agl"), f"{words}: scripts are mounted at /opt/agl"
    script = K8S / "base" / mounted.name
    assert script.is_file(), f"{words}: no {script}"
    parsed: argparse.Namespace = load_script(script).build_parser().parse_args(words[2:])
    return parsed


# -- manifests -------------------------------------------------------------------------------------------------
def test_every_manifest_parses_and_names_itself() -> None:
    docs = list(manifests())
    assert len(docs) >= 20
    for path, doc in docs:
        if path.name == "kustomization.yaml":
            assert doc["kind"] == "Kustomization"
            continue
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
        assert doc["metadata"].get("name"), path


def test_each_kustomization_lists_every_file_beside_it() -> None:
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert {k.parent.name for k in kustomizations} == {"base", "strimzi", "cloudnative-pg"}
    for kustomization in kustomizations:
        here = kustomization.parent
        spec = yaml.safe_load(kustomization.read_text())
        listed = [*spec.get("resources", []), *(p["path"] for p in spec.get("patches", []))]
        listed += [f for gen in spec.get("configMapGenerator", []) for f in gen.get("files", [])]
        for entry in listed:
            assert (here / entry).exists(), f"{kustomization}: {entry} does not exist"
        files = {p.name for p in here.iterdir() if p.is_file() and p.name != "kustomization.yaml"}
        assert files == {Path(e).name for e in listed if "/" not in e}, f"{kustomization} lists exactly its files"


def test_overlays_build_on_the_base_and_patch_containers_that_exist() -> None:
    for overlay in ("strimzi", "cloudnative-pg"):
        spec = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        assert "../../base" in spec["resources"]
    names = {c["name"] for kind in ("Deployment", "Job") for w in of_kind(kind) for c in containers(w)}
    for patch in (K8S / "overlays" / "cloudnative-pg").glob("database-url*.yaml"):
        doc = yaml.safe_load(patch.read_text())
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        assert container["name"] in names, "a strategic merge patch matches containers by name"
        assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "agl-pg-app", "key": "uri"}
    (cluster,) = of_kind("Cluster", under=K8S / "overlays")
    assert cluster["metadata"]["name"] + "-app" == "agl-pg-app", "CloudNativePG names its app Secret <cluster>-app"


def test_every_workload_has_resources_and_probes() -> None:
    workloads = of_kind("Deployment") + of_kind("Job")
    assert len(workloads) >= 14
    for workload in workloads:
        name = workload["metadata"]["name"]
        for container in containers(workload):
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][bound].keys(), f"{name}: {bound}"
            if workload["kind"] == "Job":
                continue
            reason = workload["metadata"].get("annotations", {}).get(NO_PROBE, "")
            assert "livenessProbe" in container or len(reason) > 20, f"{name}: a liveness probe, or why not"
            if container.get("ports"):
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            exec_probe = container.get("livenessProbe", {}).get("exec")
            if exec_probe:
                parse_command(exec_probe["command"])


def test_the_api_probes_are_routes_of_the_api() -> None:
    from agl.app import create_app

    # Building the app connects to nothing (its lifespan does): any addresses will do.
    settings = Settings(database_url="postgresql://agl@localhost:1/agl", kafka_bootstrap="localhost:1")
    paths = {getattr(route, "path", None) for route in create_app(settings).routes}
    assert {"/healthz", "/readyz"} <= paths
    (service,) = of_kind("Service")
    (api,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "agl-api"]
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    port = service["spec"]["ports"][0]
    assert port["port"] == 8000 and port["targetPort"] == containers(api)[0]["ports"][0]["name"]


def test_every_command_is_a_real_cli_command() -> None:
    for kind in ("Deployment", "Job"):
        for workload in of_kind(kind):
            for container in containers(workload):
                parse_command(argv(container))
    (agl,) = [s for name, s in yaml.safe_load(COMPOSE.read_text())["services"].items() if name == "agl"]
    parse_command(agl["command"])


def _services_agl_up_starts() -> set[tuple[str, ...]]:
    """The `agl ...` argv prefixes in agl/stack/stack.py's ServiceSpecs ([sys.executable, "-m", "agl", ...])."""
    tree = ast.parse((ROOT / "agl" / "stack" / "stack.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and len(node.elts) > 3 and ast.unparse(node.elts[0]) == "sys.executable":
            words = []
            for elt in node.elts[3:]:
                if not (isinstance(elt, ast.Constant) and isinstance(elt.value, str)) or elt.value.startswith("-"):
                    break  # options may differ between `agl up` and a manifest; the subcommand may not
                words.append(elt.value)
            found.add(tuple(words))
    return found


def test_kubernetes_runs_every_service_agl_up_supervises() -> None:
    started = _services_agl_up_starts()
    assert ("api",) in started and ("projections", "run") in started, "the scan finds the ServiceSpecs"
    commands = [tuple(argv(c)[1:]) for d in of_kind("Deployment") for c in containers(d) if argv(c)[0] == "agl"]
    for prefix in started:
        assert any(c[: len(prefix)] == prefix for c in commands), f"no Deployment runs `agl {' '.join(prefix)}`"
    projections = [c[2] for c in commands if c[:2] == ("projections", "run")]
    assert sorted(projections) == sorted(PROJECTION_WORKERS), "one Deployment per projection worker, no more"


def test_the_image_holds_every_package() -> None:
    """infra/Dockerfile installs the tree it copies: a package left out breaks every import of it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\S+) \./\1$", (ROOT / "infra" / "Dockerfile").read_text(), re.MULTILINE))
    assert packages <= copied, f"infra/Dockerfile does not copy {sorted(packages - copied)}"


# -- settings --------------------------------------------------------------------------------------------------
def settings_the_code_reads() -> set[str]:
    names = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        names.add(alias.upper() if isinstance(alias, str) else f"AGL_{field.upper()}")
    bound: set[str] = set()  # Python names that merely look like settings (agl/emitters.py's AGL_ANNOTATION...)
    for directory in SOURCE_DIRS:
        for path in (ROOT / directory).rglob("*.py"):
            text = path.read_text()
            names |= set(NAME.findall(text))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    bound.add(node.id)
                elif isinstance(node, ast.alias):
                    bound.add(node.asname or node.name)
        for path in (ROOT / directory).rglob("*.sh"):
            names |= set(NAME.findall(path.read_text()))
    return names - bound


def documented_settings() -> set[str]:
    return set(re.findall(r"^\| `((?:AGL|OTEL)_[A-Z0-9_]+)` \|", SETTINGS_DOC.read_text(), re.MULTILINE))


def test_the_scan_finds_settings_read_outside_the_settings_class() -> None:
    read = settings_the_code_reads()
    # Read with os.environ (agents), set as a keyword argument (the stack), read by the test runner script.
    assert {"AGL_AGENTS_API_URL", "AGL_BROKER_KIND", "AGL_TEST_BROKER", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= read
    assert "AGL_ANNOTATION" not in read, "a Python constant is not a setting"


def test_every_setting_the_code_reads_is_documented() -> None:
    missing = settings_the_code_reads() - documented_settings()
    assert not missing, f"docs/settings.md does not document {sorted(missing)}"


def test_every_documented_setting_is_read_by_the_code() -> None:
    stale = documented_settings() - settings_the_code_reads()
    assert not stale, f"docs/settings.md documents settings no code reads: {sorted(stale)}"


@pytest.mark.parametrize("where", ["configmap", "secret", "compose"])
def test_deployments_set_only_documented_settings(where: str) -> None:
    documented = documented_settings()
    if where == "compose":
        keys = set(yaml.safe_load(COMPOSE.read_text())["services"]["agl"]["environment"])
    else:
        (doc,) = of_kind("ConfigMap" if where == "configmap" else "Secret")
        keys = set(doc.get("data") or doc.get("stringData") or {})
    assert keys, where
    settings = {k for k in keys if k.startswith(("AGL_", "OTEL_"))}
    assert settings <= documented, f"{where} sets undocumented {sorted(settings - documented)}"
    if where == "configmap":
        assert keys == settings, "the ConfigMap holds settings only"
        # Values the Settings class would refuse stop every process at start: validate them here.
        Settings.model_validate({k.removeprefix("AGL_").lower(): v for k, v in (doc["data"]).items()})
