"""Each model overlay gives its inference pod the model's GPUs, and everything derived from that one
value agrees: GPU request/limit, torchrun's --nproc_per_node and the model-parallel size."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.manifests import (
    EXTRA_OVERLAYS,
    FP8_OVERLAYS,
    GPU,
    MODEL_PARALLEL,
    OVERLAYS_DIR,
    Container,
    Doc,
    containers,
    find,
    pod_specs,
)


def inference_container(docs: list[Doc]) -> Container:
    deployment = find(docs, "Deployment", "llamagate-inference")
    (c,) = [c for c in containers([deployment], init=False) if c.spec["name"] == "inference"]
    return c


def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    assert len(values) == 1, f"expected one {name}=... in {args}"
    return values[0]


def test_every_overlay_is_covered() -> None:
    on_disk = {p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file()}
    assert on_disk == {*MODEL_PARALLEL, *EXTRA_OVERLAYS}


@pytest.mark.parametrize("model", sorted(MODEL_PARALLEL))
def test_gpus_ranks_and_model_parallel_agree(rendered: dict[str, list[Doc]], model: str) -> None:
    mp = MODEL_PARALLEL[model]
    c = inference_container(rendered[model])
    args = c.expanded_args()
    resources = c.spec["resources"]
    assert int(resources["limits"][GPU]) == mp
    assert int(resources["requests"][GPU]) == mp
    assert args[0] == "torchrun"
    assert int(flag(args, "--nproc_per_node")) == mp
    assert flag(args, "--nnodes") == "1"
    assert int(c.env()["MODEL_PARALLEL"]) == mp
    # The checkpoint directory is the model's folder of the release, sharded `mp` ways.
    assert flag(args, "--ckpt-dir") == f"/models/{model}"
    assert flag(args, "--model-name") == model


@pytest.mark.parametrize("overlay", sorted(FP8_OVERLAYS))
def test_fp8_overlays_serve_the_release_on_fewer_gpus_with_fp8_weights(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    """Only the precision, the GPU count and what follows from it differ from the release's overlay:
    the same folder, claim and download Job, GPUs = ranks = model-parallel size."""
    model, mp = FP8_OVERLAYS[overlay]
    assert mp < MODEL_PARALLEL[model]
    c = inference_container(rendered[overlay])
    args = c.expanded_args()
    assert int(c.spec["resources"]["limits"][GPU]) == int(c.spec["resources"]["requests"][GPU]) == mp
    assert int(flag(args, "--nproc_per_node")) == int(c.env()["MODEL_PARALLEL"]) == mp
    assert flag(args, "--weights-dtype") == "fp8"
    assert flag(args, "--dtype") == "bfloat16"  # activations, embeddings, norms and the output head
    assert flag(args, "--ckpt-dir") == f"/models/{model}"
    assert flag(args, "--model-name") == model
    release = inference_container(rendered[model])
    ranks = f"--nproc_per_node={MODEL_PARALLEL[model]}"
    expected = [a.replace(ranks, f"--nproc_per_node={mp}") for a in release.expanded_args()]
    assert [a for a in args if a != "--weights-dtype=fp8"] == expected
    assert c.spec["volumeMounts"] == release.spec["volumeMounts"]
    assert c.pod["volumes"] == release.pod["volumes"]
    job_names = {d["metadata"]["name"] for d in rendered[overlay] if d["kind"] == "Job"}
    assert job_names == {f"llamagate-download-{model}"}
    job = find(rendered[overlay], "Job", f"llamagate-download-{model}")
    assert job["spec"] == find(rendered[model], "Job", f"llamagate-download-{model}")["spec"]


@pytest.mark.parametrize("overlay", sorted(FP8_OVERLAYS))
def test_inference_command_line_is_accepted_by_the_inference_service(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    """The manifest's flags against the service's own parser (on a machine without a GPU the FP8
    capability check is left to the pod's GPU), so a renamed flag fails here, not in a pod."""
    from services.inference.config import parse_config

    args = inference_container(rendered[overlay]).expanded_args()
    service_args = args[args.index("services.inference") + 1 :]
    config = parse_config(service_args)
    assert config.weights_dtype == "fp8"
    assert (config.engine.device, config.engine.dtype) == ("cuda", "bfloat16")
    assert config.model_name == FP8_OVERLAYS[overlay][0]


@pytest.mark.parametrize("model", sorted(MODEL_PARALLEL))
def test_download_job_fetches_this_model(rendered: dict[str, list[Doc]], model: str) -> None:
    job = find(rendered[model], "Job", f"llamagate-download-{model}")
    (c,) = containers([job])
    script = " ".join(c.expanded_args())
    size = re.fullmatch(r"llama-2-(\d+b)(-chat)?", model)
    assert size is not None
    download_name = size.group(1).upper() + (size.group(2) or "")
    # The URL is a secret: read by the downloader from the Secret's file, never in the manifest.
    url_file = "--url-file /var/run/secrets/llama/url"
    assert f'llamagate download {url_file} --models "{download_name}" --out /models' in script
    mounts = {m["mountPath"]: m["name"] for m in c.spec["volumeMounts"]}
    assert mounts["/var/run/secrets/llama"] == "llama-url"
    secret_volumes = [v for v in job["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert [(v["name"], v["secret"]["secretName"]) for v in secret_volumes] == [
        ("llama-url", "llama-download-url")
    ]
    # Failures a retry cannot fix (usage, expired link, disk full, bad checksum) end the Job.
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2, 3, 4, 6]
    # Present and empty: Kubernetes 1.26-1.28's schema requires the field (test_policy checks 1.27).
    assert rule["onPodConditions"] == []
    # The Job fills this model's own claim.
    claims = [v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v]  # fmt: skip
    assert claims == [f"llamagate-weights-{model}"]
    # The marker the inference init container waits for names the same model.
    assert f"/models/.llamagate-complete-{model}" in script
    deployment = find(rendered[model], "Deployment", "llamagate-inference")
    (wait,) = [c for c in containers([deployment]) if c.spec["name"] == "wait-for-weights"]
    assert f"/models/.llamagate-complete-{model}" in " ".join(wait.expanded_args())


@pytest.mark.parametrize("overlay", [*sorted(MODEL_PARALLEL), *EXTRA_OVERLAYS, "multinode"])
def test_no_placeholder_survives_and_model_values_stay_local(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    text = yaml.safe_dump_all(rendered[overlay])
    assert "set-by-" not in text
    names = {d["metadata"]["name"] for d in rendered[overlay] if d["kind"] == "ConfigMap"}
    assert not names & {"llamagate-model", "llamagate-topology"}


@pytest.mark.parametrize("model", sorted(MODEL_PARALLEL))
def test_inference_pod_shape(rendered: dict[str, list[Doc]], model: str) -> None:
    docs = rendered[model]
    c = inference_container(docs)
    pod = c.pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c.spec["volumeMounts"]}
    # NCCL's shared memory: a memory-backed /dev/shm.
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    # Weights: read-only from the claim the Job fills.
    weights = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]
    assert weights == {"claimName": f"llamagate-weights-{model}", "readOnly": True}
    assert mounts["/models"]["readOnly"] is True
    pvc = find(docs, "PersistentVolumeClaim", f"llamagate-weights-{model}")
    assert re.fullmatch(r"\d+Gi", pvc["spec"]["resources"]["requests"]["storage"])
    # GPU nodes only.
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # Weight loading may take many minutes: the startup probe allows at least 20.
    startup = c.spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60
    # Streams get drained: the kubelet outwaits torchrun, which outwaits the server's own drain (its
    # default 30 s would SIGKILL a draining rank; tests/integration/operations/test_torchrun_drain).
    grace = float(flag(c.expanded_args(), "--grace-s"))
    shutdown = float(flag(c.expanded_args(), "--shutdown-timeout"))
    assert pod["terminationGracePeriodSeconds"] > shutdown >= grace + 10
    assert grace >= 60


@pytest.mark.parametrize("overlay", [*sorted(MODEL_PARALLEL), *EXTRA_OVERLAYS])
def test_services_and_exposure(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert set(services) == {
        "llamagate-inference",
        "llamagate-safety",
        "llamagate-gateway",
        "llamagate-gateway-pods",  # the StatefulSet's governing Service (headless, in-cluster only)
    }
    assert services["llamagate-gateway-pods"]["spec"]["clusterIP"] == "None"
    # Headless, so DNS lists every pod and the gateway balances per call.
    assert services["llamagate-inference"]["spec"]["clusterIP"] == "None"
    assert services["llamagate-safety"]["spec"]["clusterIP"] == "None"
    # Nothing but the Ingress reaches in from outside the namespace.
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services.values())
    ingresses = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Ingress"}
    assert set(ingresses) == {"llamagate-gateway", "llamagate-gateway-http"}
    for name, port, path in (("llamagate-gateway", "grpc", "/"), ("llamagate-gateway-http", "http", "/v1")):
        (rule,) = ingresses[name]["spec"]["rules"]
        (route,) = rule["http"]["paths"]
        assert route["path"] == path
        assert route["backend"]["service"] == {"name": "llamagate-gateway", "port": {"name": port}}
        assert ingresses[name]["spec"]["tls"][0]["secretName"] == f"{name}-tls"
    # Server-sent events must not wait in the proxy's buffer.
    annotations = ingresses["llamagate-gateway-http"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"

    gateway = find(docs, "StatefulSet", "llamagate-gateway")
    assert gateway["spec"]["serviceName"] == "llamagate-gateway-pods"
    (c,) = containers([gateway])
    args = c.spec["args"]
    ns = "$(POD_NAMESPACE)"
    assert flag(args, "--inference-target") == f"dns:///llamagate-inference.{ns}.svc.cluster.local:50052"
    assert flag(args, "--safety-target") == f"dns:///llamagate-safety.{ns}.svc.cluster.local:50053"
    env = {e["name"]: e for e in c.spec["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert flag(args, "--api-keys").startswith("/etc/llamagate/api-keys/")
    secrets = [v["secret"]["secretName"] for v in c.pod["volumes"] if "secret" in v]
    assert secrets == ["llamagate-api-keys"]

    hpa = find(docs, "HorizontalPodAutoscaler", "llamagate-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "llamagate-gateway",
    }
    assert "replicas" not in gateway["spec"], "the HPA owns the gateway's replica count"
    pdb = find(docs, "PodDisruptionBudget", "llamagate-gateway")
    assert pdb["spec"]["selector"] == gateway["spec"]["selector"]
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]


@pytest.mark.parametrize("overlay", [*sorted(MODEL_PARALLEL), *EXTRA_OVERLAYS])
def test_probes_are_grpc_health_on_the_serving_port(rendered: dict[str, list[Doc]], overlay: str) -> None:
    ports = {"inference": 50052, "safety": 50053, "gateway": 50051}
    metrics = {"inference": 9102, "safety": 9103, "gateway": 9101}
    docs = rendered[overlay]
    for name, port in ports.items():
        deployment = find(docs, "StatefulSet" if name == "gateway" else "Deployment", f"llamagate-{name}")
        (c,) = containers([deployment], init=False)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            # The kubelet's native gRPC probe calls grpc.health.v1.Health/Check on that port; the
            # gateway's readiness asks "readiness", which follows its backends (services/gateway/readiness.py).
            expected = {"port": port}
            if name == "gateway" and probe == "readinessProbe":
                expected["service"] = "readiness"  # type: ignore[assignment]
            assert c.spec[probe]["grpc"] == expected, f"{name} {probe}"
        args = c.expanded_args()
        assert flag(args, "--port") == str(port)
        assert flag(args, "--metrics-port") == str(metrics[name])
        assert flag(args, "--host") == "0.0.0.0"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(metrics[name])
        container_ports = {p["name"]: p["containerPort"] for p in c.spec["ports"]}
        extra = {"http": 8080} if name == "gateway" else {}  # the OpenAI-compatible HTTP API
        assert container_ports == {"grpc": port, "metrics": metrics[name], **extra}


def test_safety_defaults_to_cpu_and_llama_guard_is_a_gpu_component(rendered: dict[str, list[Doc]]) -> None:
    (cpu,) = containers([find(rendered["llama-2-7b-chat"], "Deployment", "llamagate-safety")])
    assert flag(cpu.spec["args"], "--classifier") == "embedded"
    assert not [a for a in cpu.spec["args"] if a.startswith("--device=cuda")]
    assert GPU not in cpu.spec["resources"]["limits"]
    assert "nodeSelector" not in cpu.pod
    # The classifier's thread pool matches the cores it is given (its latency budget needs 4).
    assert int(flag(cpu.spec["args"], "--threads")) == int(cpu.spec["resources"]["limits"]["cpu"]) == 4

    docs = rendered["llama-2-7b-chat-llama-guard"]
    (gpu,) = containers([find(docs, "Deployment", "llamagate-safety")])
    assert flag(gpu.spec["args"], "--classifier") == "llama-guard"
    assert flag(gpu.spec["args"], "--model-dir") == "/models/llama-guard"
    assert (flag(gpu.spec["args"], "--device"), flag(gpu.spec["args"], "--dtype")) == ("cuda", "bfloat16")
    assert int(gpu.spec["resources"]["limits"][GPU]) == 1
    assert gpu.spec["image"] == "llamagate-inference:0.1.0"  # the image with CUDA torch
    claims = [v["persistentVolumeClaim"] for v in gpu.pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": "llamagate-llama-guard-weights", "readOnly": True}]
    find(docs, "PersistentVolumeClaim", "llamagate-llama-guard-weights")
    # The model itself is untouched by the component.
    assert int(inference_container(docs).spec["resources"]["limits"][GPU]) == 1


def test_safety_policy_config_map_loads_with_the_service_loader(
    rendered: dict[str, list[Doc]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from services.safety.policy import load_policy

    docs = rendered["llama-2-7b-chat"]
    (cm,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("llamagate-safety")
    ]
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(cm["data"]["policy.yaml"])
    policy = load_policy(path)
    (safety,) = containers([find(docs, "Deployment", "llamagate-safety")])
    assert flag(safety.spec["args"], "--policy") == "/etc/llamagate/policy/policy.yaml"
    volumes = {v["name"]: v for v in safety.pod["volumes"]}
    assert volumes["policy"]["configMap"]["name"] == cm["metadata"]["name"]
    assert policy.categories


def test_multinode_example_splits_the_70b_model_over_nodes(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["multinode"]
    assert not [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llamagate-inference"
    ]
    lws = find(docs, "LeaderWorkerSet", "llamagate-inference")
    nodes = lws["spec"]["leaderWorkerTemplate"]["size"]
    for c in containers([lws], init=False):
        env = c.env()
        gpus = int(c.spec["resources"]["limits"][GPU])
        assert int(env["NODES"]) == nodes
        assert int(env["GPUS_PER_NODE"]) == gpus
        assert nodes * gpus == MODEL_PARALLEL[env["MODEL_NAME"]] == 8
        script = " ".join(c.spec["command"])
        for needed in (
            '--nnodes="$NODES"',
            '--nproc_per_node="$GPUS_PER_NODE"',
            '--node_rank="$LWS_WORKER_INDEX"',
            '--master_addr="$LWS_LEADER_ADDRESS"',
            '--ckpt-dir="/models/$MODEL_NAME"',
        ):
            assert needed in script
    service = find(docs, "Service", "llamagate-inference")
    assert service["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    # Every pod of the group waits for this model's complete weights, from this model's claim, and
    # torchrun outwaits the server's drain.
    model = next(iter(containers([lws], init=False))).env()["MODEL_NAME"]
    claim = f"llamagate-weights-{model}"
    find(docs, "PersistentVolumeClaim", claim)
    for owner, _, pod in pod_specs(lws):
        (wait,) = pod["initContainers"]
        assert wait["name"] == "wait-for-weights", owner
        assert f"/models/.llamagate-complete-{model}" in " ".join(wait["args"]).replace(
            "$(MODEL_NAME)", model
        )
        assert {
            v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        } == {claim}
        (c,) = pod["containers"]
        assert "--shutdown-timeout=140" in " ".join(c["command"]) and "--grace-s=120" in " ".join(
            c["command"]
        )
        assert pod["terminationGracePeriodSeconds"] > 140
    leader = next(c for c in containers([lws], init=False) if c.owner.endswith("leaderTemplate"))
    assert leader.spec["readinessProbe"]["grpc"] == {"port": 50052}


def test_gateway_command_line_is_accepted_by_the_gateway(rendered: dict[str, list[Doc]]) -> None:
    """The manifest's flags against the gateway's own parser, so a renamed flag fails here, not in a pod."""
    from services.gateway.config import build_parser, config_from_args

    (c,) = containers([find(rendered["llama-2-7b-chat"], "StatefulSet", "llamagate-gateway")])
    assert c.spec["command"] == ["python", "-m", "services.gateway"]
    args = [a.replace("$(POD_NAMESPACE)", "llamagate") for a in c.spec["args"]]
    config = config_from_args(build_parser().parse_args(args))
    assert config.server.port == 50051 and config.server.host == "0.0.0.0"
    assert config.telemetry.metrics_port == 9101
    assert config.inference_target == "dns:///llamagate-inference.llamagate.svc.cluster.local:50052"
    assert config.server.grace_s < c.pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("model", ["llama-2-7b-chat", "llama-2-70b"])
def test_download_command_line_is_accepted_by_the_cli(rendered: dict[str, list[Doc]], model: str) -> None:
    import shlex

    from llamagate.cli import build_parser

    (c,) = containers([find(rendered[model], "Job", f"llamagate-download-{model}")])
    script = c.expanded_args()[-1]
    download, _, after = script.partition(" && ")
    assert after.startswith("touch ")
    words = shlex.split(download)
    assert words[:2] == ["llamagate", "download"]
    args = build_parser().parse_args(words[1:])
    assert args.url_file is not None and str(args.url_file) == "/var/run/secrets/llama/url"
    assert str(args.out) == "/models"


def test_weights_claim_and_download_job_are_named_per_model(rendered: dict[str, list[Doc]]) -> None:
    """Switching overlays creates a new claim (of the new size) and a new Job beside the old ones."""
    for model in MODEL_PARALLEL:
        docs = rendered[model]
        claims = [d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"]
        jobs = [d["metadata"]["name"] for d in docs if d["kind"] == "Job"]
        assert claims == [f"llamagate-weights-{model}"]
        assert jobs == [f"llamagate-download-{model}"]
        # The pods' label, which the egress policy selects, stays the same for every model.
        (job,) = [d for d in docs if d["kind"] == "Job"]
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "llamagate-download-weights"


@pytest.mark.parametrize("overlay", [*sorted(MODEL_PARALLEL), *EXTRA_OVERLAYS])
def test_inference_has_a_disruption_budget_over_its_pods(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    deployment = find(docs, "Deployment", "llamagate-inference")
    pdb = find(docs, "PodDisruptionBudget", "llamagate-inference")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["minAvailable"] == 1


def test_the_spare_component_runs_two_replicas_and_surges_rollouts(rendered: dict[str, list[Doc]]) -> None:
    base = find(rendered["llama-2-7b-chat"], "Deployment", "llamagate-inference")
    assert base["spec"]["replicas"] == 1
    spare = find(rendered["llama-2-7b-chat-spare"], "Deployment", "llamagate-inference")
    assert spare["spec"]["replicas"] == 2
    # A rollout adds the new replica before it takes an old one away; a drain leaves one serving.
    assert spare["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pdb = find(rendered["llama-2-7b-chat-spare"], "PodDisruptionBudget", "llamagate-inference")
    assert 0 < pdb["spec"]["minAvailable"] < spare["spec"]["replicas"]
    (spread,) = spare["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == spare["spec"]["selector"]["matchLabels"]
    # Nothing else differs from the overlay it extends.
    assert (
        inference_container(rendered["llama-2-7b-chat-spare"]).spec
        == inference_container(rendered["llama-2-7b-chat"]).spec
    )


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    match = re.fullmatch(r"(\d+)(Mi|Gi|Ti)", quantity)
    assert match, quantity
    return int(match.group(1)) * units[match.group(2)]


def test_each_gateway_replica_keeps_its_audit_trail_on_its_own_volume(rendered: dict[str, list[Doc]]) -> None:
    from services.gateway.config import build_parser, config_from_args

    gateway = find(rendered["llama-2-7b-chat"], "StatefulSet", "llamagate-gateway")
    (template,) = gateway["spec"]["volumeClaimTemplates"]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    # Scale-in and deletion keep the claims (the trail outlives its pods).
    assert gateway["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    (c,) = containers([gateway])
    mounts = {m["mountPath"]: m["name"] for m in c.spec["volumeMounts"]}
    assert mounts["/var/lib/llamagate/audit"] == template["metadata"]["name"]
    assert template["metadata"]["name"] not in {v["name"] for v in c.pod["volumes"]}, "not an emptyDir"
    config = config_from_args(
        build_parser().parse_args([a.replace("$(POD_NAMESPACE)", "ns") for a in c.spec["args"]])
    )
    assert str(config.audit_dir) == "/var/lib/llamagate/audit"
    # Retention never lets the trail fill the claim: its size cap plus the free space it keeps fit.
    volume_bytes = _mebibytes(template["spec"]["resources"]["requests"]["storage"]) * 1024 * 1024
    retention = config.audit_retention
    assert retention.max_total_bytes and retention.min_free_bytes and retention.max_age_s
    assert retention.max_total_bytes + retention.min_free_bytes < volume_bytes
    assert retention.max_total_bytes >= 2 * config.audit_max_file_bytes
