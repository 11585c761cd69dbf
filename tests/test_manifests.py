"""Manifests, Dockerfile and the commands they run: parse, validate offline, agree with the CLI.

    .venv/bin/pytest tests/test_manifests.py -q

Kubernetes core kinds are validated with `kubernetes-validate` (strict); KubeRay, KServe, Trainer and
Kustomize documents with the hand-written partial schemas vendored in manifests/schemas/ (see its
README), and the pod templates / containers embedded in them again with `kubernetes-validate`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from resume.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
SCHEMAS = MANIFESTS / "schemas"
K8S_VERSION = "1.30.0"
CUSTOM = {("ray.io/v1", "RayCluster"): "raycluster-ray.io-v1.json",
          ("ray.io/v1", "RayJob"): "rayjob-ray.io-v1.json",
          ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-serving.kserve.io-v1beta1.json",
          ("trainer.kubeflow.org/v1alpha1", "TrainJob"): "trainjob-trainer.kubeflow.org-v1alpha1.json",
          ("kustomize.config.k8s.io/v1beta1", "Kustomization"): "kustomization-kustomize.config.k8s.io-v1beta1.json"}
# Files deliberately outside kustomization.yaml (one-off jobs, alternatives, the Secret template).
NOT_APPLIED = {"kuberay/rayjob-grpo.yaml", "trainer/trainjob-retriever.yaml",
               "kserve/summarizer-hf-runtime-isvc.yaml", "secrets/mlflow-secret.template.yaml", "kustomization.yaml"}


def _files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*.yaml") if SCHEMAS not in p.parents)


def _docs() -> list[tuple[str, dict]]:
    out = []
    for p in _files():
        for doc in yaml.safe_load_all(p.read_text(encoding="utf-8")):
            if doc is not None:
                out.append((p.relative_to(MANIFESTS).as_posix(), doc))
    return out


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pipeline_mod():
    return _load_module(ROOT / "pipelines" / "resume_pipeline.py", "resume_pipeline_for_manifest_tests")


def _k8s_validate(obj: dict, where: str) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(x) for x in e.path)
        raise AssertionError(f"{where}: {obj.get('kind')}: {path}: {e.message}") from None


def _pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(where, PodTemplateSpec) embedded in a KubeRay resource."""
    spec = doc["spec"]
    cluster = spec if doc["kind"] == "RayCluster" else spec.get("rayClusterSpec")
    out = []
    if cluster:
        out.append(("headGroupSpec", cluster["headGroupSpec"]["template"]))
        out += [(f"workerGroupSpecs[{g['groupName']}]", g["template"]) for g in cluster.get("workerGroupSpecs", [])]
    if doc["kind"] == "RayJob" and spec.get("submitterPodTemplate"):
        out.append(("submitterPodTemplate", spec["submitterPodTemplate"]))
    return out


# ------------------------------------------------------------------------------------ parse + validate


def test_every_manifest_parses_and_has_a_kind():
    files = _files()
    assert len(files) >= 12, files
    for p in files:
        docs = [d for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d is not None]
        assert docs, f"{p}: empty"
        for d in docs:
            assert {"apiVersion", "kind"} <= set(d), f"{p}: a document without apiVersion/kind"


def test_schemas_are_valid_json_schemas():
    for name in CUSTOM.values():
        schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        jsonschema.Draft7Validator.check_schema(schema)
    assert "hand" in (SCHEMAS / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("where,doc", _docs(), ids=lambda x: x if isinstance(x, str) else x.get("kind"))
def test_manifest_validates_against_its_schema(where, doc):
    key = (doc["apiVersion"], doc["kind"])
    if key in CUSTOM:
        schema = json.loads((SCHEMAS / CUSTOM[key]).read_text(encoding="utf-8"))
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError as e:
            raise AssertionError(f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}") from None
    else:
        _k8s_validate(doc, where)
    # the Kubernetes objects embedded in custom resources get the full upstream schema
    if doc["kind"] in ("RayCluster", "RayJob"):
        for name, tpl in _pod_templates(doc):
            _k8s_validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": tpl},
                          f"{where} {name}")
    if doc["kind"] == "InferenceService":
        pred = doc["spec"]["predictor"]
        if "containers" in pred:
            pod_keys = ("containers", "serviceAccountName", "tolerations", "securityContext", "volumes",
                        "nodeSelector", "imagePullSecrets")
            _k8s_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                           "spec": {k: pred[k] for k in pod_keys if k in pred}}, f"{where} predictor")
        if "model" in pred:
            m = pred["model"]
            _k8s_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "kserve-container", "image": "x", "args": m.get("args", []),
                 "resources": m.get("resources", {})}]}}, f"{where} predictor.model")
    if doc["kind"] == "TrainJob":
        t = doc["spec"]["trainer"]
        _k8s_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "node", "image": t["image"], "command": t["command"], "args": t["args"], "env": t.get("env", []),
             "resources": t["resourcesPerNode"]}]}}, f"{where} trainer")


def test_schemas_catch_mistakes():
    """The vendored schemas are not vacuous: a misspelt field or a bad enum fails."""
    docs = dict((d["kind"], d) for _, d in _docs() if d["kind"] in ("RayCluster", "InferenceService"))
    rc = json.loads(json.dumps(docs["RayCluster"]))
    rc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rc, json.loads((SCHEMAS / CUSTOM[("ray.io/v1", "RayCluster")]).read_text()))
    isvc = json.loads(json.dumps(docs["InferenceService"]))
    isvc["spec"]["predictor"]["scaleMetric"] = "gpu"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(isvc, json.loads((SCHEMAS / CUSTOM[("serving.kserve.io/v1beta1",
                                                                  "InferenceService")]).read_text()))


def test_kustomization_lists_every_applied_file():
    kust = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kust["resources"])
    for r in listed:
        assert (MANIFESTS / r).is_file(), f"kustomization.yaml lists a missing file {r}"
    on_disk = {p.relative_to(MANIFESTS).as_posix() for p in _files()}
    assert on_disk - listed == NOT_APPLIED, "every manifest is applied or documented as not applied"


# ------------------------------------------------------------------------------------------ secrets


def test_no_inline_credentials():
    sensitive = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|TRACKING_URI|CREDENTIAL)", re.I)
    for where, doc in _docs():
        if doc["kind"] == "Secret":
            assert where.endswith(".template.yaml"), f"{where}: a real Secret in the repo"
            for k, v in {**doc.get("stringData", {}), **doc.get("data", {})}.items():
                assert str(v).startswith("<") and str(v).endswith(">"), f"{where}: {k} is not a placeholder"
            continue
        text = json.dumps(doc)
        for m in re.finditer(r'\{"name": "([A-Z_]+)", "value": ', text):
            assert not sensitive.search(m.group(1)), f"{where}: {m.group(1)} set inline; use secretKeyRef"


# ---------------------------------------------------------------------------- images and commands


def _images(obj) -> list[str]:
    if isinstance(obj, dict):
        out = [obj["image"]] if isinstance(obj.get("image"), str) else []
        return out + [i for v in obj.values() for i in _images(v)]
    if isinstance(obj, list):
        return [i for v in obj for i in _images(v)]
    return []


def test_one_image_everywhere(pipeline_mod):
    comp = _load_module(ROOT / "components" / "evaluate" / "component.py", "evaluate_component_for_tests")
    image = comp.RESUME_IMAGE
    for sub in ("grpo_train", "summarize_corpus", "retriever_finetune", "register_model", "control"):
        src = (ROOT / "components" / sub / "component.py").read_text(encoding="utf-8")
        assert f'os.environ.get("RESUME_IMAGE", "{image}")' in src, sub
    used = [i for _, d in _docs() for i in _images(d)]
    assert used and set(used) == {image}, set(used)
    compiled = (ROOT / "pipelines" / "resume_pipeline.yaml").read_text(encoding="utf-8")
    assert set(re.findall(r"^\s+image: (\S+)$", compiled, re.M)) == {image}
    kust = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    name, tag = image.rsplit(":", 1)
    assert kust["images"] == [{"name": name, "newTag": tag}]


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_dockerfile_shape():
    df = _dockerfile()
    assert re.search(r'^ENTRYPOINT \["resume"\]$', df, re.M)
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", df, re.M)
    names = [n for _, n in stages]
    assert {"base-cpu", "base-cuda", "builder", "final"} <= set(names)
    assert re.search(r"^ARG BASE=cuda$", df, re.M) and "FROM base-${BASE} AS final" in df
    final = df.split("AS final", 1)[1]
    assert "build-essential" not in final and "pip install" not in final, "no build tools in the final stage"
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    assert re.search(r"^USER 1000", final, re.M), "non-root user"
    builder = df.split("AS builder", 1)[1].split("AS final", 1)[0]
    assert "-r requirements.txt -c constraints.txt" in builder and "torch==2.13.0" in builder
    assert "cu12" in df and "whl/cpu" in df
    req = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert re.search(r"^torch==2\.13\.0$", req, re.M), "the image pins the same torch as requirements.txt"
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git", "runs", ".cache"} <= set(ignore)


def test_make_image_uses_docker_else_buildah_else_refuses():
    mk = (ROOT / "Makefile").read_text(encoding="utf-8")
    target = mk.split("\nimage:", 1)[1].split("\n\n", 1)[0]
    docker, buildah, refuse = target.split("elif", 1)[0], target.split("elif", 1)[1].split("else", 1)[0], \
        target.split("else \\", 1)[1]
    assert "docker info" in docker and "docker build" in docker and "--build-arg BASE=" in docker
    assert "buildah" in buildah and "--isolation chroot" in buildah and "--build-arg BASE=" in buildah
    assert "exit 1" in refuse


def _commands() -> list[tuple[str, list[str]]]:
    """(where, argv after the program) for every project command in the manifests."""
    out = []
    for where, doc in _docs():
        if doc["kind"] == "InferenceService":
            for c in doc["spec"]["predictor"].get("containers", []):
                assert "command" not in c, f"{where}: the image's ENTRYPOINT (resume) runs the predictor"
                out.append((where, ["resume", *c["args"]]))
        if doc["kind"] == "RayJob":
            out.append((where, shlex.split(doc["spec"]["entrypoint"])))
        if doc["kind"] == "TrainJob":
            t = doc["spec"]["trainer"]
            out.append((where, [*t["command"], *t["args"]]))
        if doc["kind"] in ("RayCluster", "RayJob"):
            for _, tpl in _pod_templates(doc):
                for c in tpl["spec"]["containers"]:
                    assert "command" not in c and "args" not in c, f"{where}: KubeRay sets the ray start command"
    return out


class _Parsed(Exception):
    pass


def _parse_with_main(main, argv: list[str], monkeypatch) -> argparse.Namespace:
    """Parse `argv` with the real parser inside `main` (stopped right after parsing)."""
    orig = argparse.ArgumentParser.parse_args

    def spy(self, args=None, namespace=None):
        raise _Parsed(orig(self, args, namespace))

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", spy)
        with pytest.raises(_Parsed) as e:
            main(argv)
    return e.value.args[0]


def _parse(argv: list[str], where: str, monkeypatch) -> None:
    from resume import ray_jobs

    if argv[0] == "resume":
        build_parser().parse_args(argv[1:])
    elif argv[:3] == ["python", "-m", "resume.ray_jobs"]:
        ray_jobs.build_parser().parse_args(argv[3:])
    elif argv[:3] == ["torchrun", "-m", "resume.retriever"]:
        from resume import retriever

        ns = _parse_with_main(retriever.main, argv[3:], monkeypatch)
        assert ns.texts and ns.out, f"{where}: fine-tunes on summaries into --out"
    else:
        raise AssertionError(f"{where}: unknown program {argv[:3]}")


def test_manifest_commands_parse_with_the_cli(monkeypatch):
    cmds = _commands()
    kinds = {argv[1] if argv[0] == "resume" else argv[2] for _, argv in cmds}
    assert {"serve", "grpo-train", "resume.retriever"} <= kinds, kinds
    for where, argv in cmds:
        _parse(argv, where, monkeypatch)
    serve = [a for _, a in cmds if a[1] == "serve"]
    assert {a[2] for a in serve} == {"retriever", "summarizer"}
    for a in serve:
        args = build_parser().parse_args(a[1:])
        assert args.http_port == 8080 and args.model.startswith("models:/")


def test_probes_hit_the_kserve_endpoints():
    for where, doc in _docs():
        if doc["kind"] != "InferenceService" or "containers" not in doc["spec"]["predictor"]:
            continue
        c = doc["spec"]["predictor"]["containers"][0]
        name = build_parser().parse_args(c["args"]).name
        assert c["readinessProbe"]["httpGet"] == {"path": f"/v2/models/{name}/ready", "port": 8080}, where
        assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}, where
        assert name == doc["metadata"]["name"]


def test_component_ray_entrypoints_parse(monkeypatch):
    from resume import ray_jobs

    g = ray_jobs.grpo_entrypoint(config="/s/config.yaml", data="/s/data", summarizer="/s/summarizer",
                                 retriever="/s/retriever", out="/s/out")
    _parse(g, "grpo_train component", monkeypatch)
    s = ray_jobs.summarize_entrypoint(config="/s/c.yaml", data="/s/d", summarizer="/s/m", retriever="r",
                                      out="/s/summaries.jsonl", num_actors=4, gpus_per_actor=1.0)
    _parse(s, "summarize_corpus component", monkeypatch)


# -------------------------------------------------------------------- cross-references with the pipeline


def test_names_agree_with_the_pipeline(pipeline_mod):
    docs = _docs()
    by_kind: dict[str, list[dict]] = {}
    for _, d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    (rc,) = by_kind["RayCluster"]
    head_svc = f"{rc['metadata']['name']}-head-svc"
    assert pipeline_mod.RAY_HEAD == f"http://{head_svc}:8265"
    (pvc,) = by_kind["PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == pipeline_mod.SHARED_PVC
    mounts = [m["mountPath"] for _, tpl in _pod_templates(rc) for c in tpl["spec"]["containers"]
              for m in c.get("volumeMounts", []) if m["name"] == "artifacts"]
    assert mounts and set(mounts) == {pipeline_mod.SHARED_MOUNT}
    (secret,) = by_kind["Secret"]
    assert secret["metadata"]["name"] == pipeline_mod.MLFLOW_SECRET
    assert set(secret["stringData"]) == set(pipeline_mod.MLFLOW_ENV)
    refs = {ref["secretKeyRef"]["name"] for _, d in docs for ref in _find(d, "secretKeyRef", parent=True)}
    assert refs == {pipeline_mod.MLFLOW_SECRET}


def _find(obj, key: str, parent: bool = False):
    if isinstance(obj, dict):
        if key in obj:
            yield obj if parent else obj[key]
        for v in obj.values():
            yield from _find(v, key, parent)
    elif isinstance(obj, list):
        for v in obj:
            yield from _find(v, key, parent)


def test_pipeline_rbac_is_minimal():
    """What the roles hold; that they suffice for a KFP v2 task: tests/test_deploy.py."""
    roles = {d["metadata"]["name"]: d for w, d in _docs() if d["kind"] == "Role"}
    head = roles["resume-pipeline-ray-head"]
    assert head["rules"] == [{"apiGroups": [""], "resources": ["services"],
                              "resourceNames": ["resume-raycluster-head-svc"], "verbs": ["get"]}]
    runner = roles["resume-pipeline-runner"]
    for rule in runner["rules"]:
        assert "*" not in rule["verbs"] and not {"list", "watch", "delete", "update"} & set(rule["verbs"])
    alt = roles["resume-pipeline-rayjobs"]
    for rule in alt["rules"]:
        assert rule["apiGroups"] == ["ray.io"] and "*" not in rule["verbs"]
    bindings = [d for _, d in _docs() if d["kind"] == "RoleBinding"]
    assert sorted(b["roleRef"]["name"] for b in bindings) == ["resume-pipeline-ray-head", "resume-pipeline-runner"]
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "resume-pipeline"}]
    assert not [d for _, d in _docs() if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (np_,) = [d for _, d in _docs() if d["kind"] == "NetworkPolicy"]
    ports = [p["port"] for rule in np_["spec"]["ingress"] for p in rule.get("ports", [])]
    assert ports == [8265, 8265], "the dashboard port, to the pipeline pods and the KubeRay operator"


def test_gpu_workers_and_resources():
    (rc,) = [d for _, d in _docs() if d["kind"] == "RayCluster"]
    (w,) = rc["spec"]["workerGroupSpecs"]
    res = w["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == "1"
    assert w["minReplicas"] <= w["replicas"] <= w["maxReplicas"]
    assert rc["spec"]["rayVersion"] == __import__("ray").__version__
    for _, d in _docs():
        # a TrainJob's runtimePatches only add mounts to the runtime's container (resourcesPerNode sizes it)
        spec = {k: v for k, v in d.get("spec", {}).items() if k != "runtimePatches"}
        for c in _find(spec, "containers"):
            for cont in c:
                assert cont.get("resources", {}).get("requests"), f"{d['metadata']}: container without requests"
