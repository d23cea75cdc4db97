"""The pure side of ``loom local apply``: manifests read, checked, expanded and injected."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loom.inject import InjectSettings
from loom.local.errors import ManifestError
from loom.local.images import ImageMap, container_argv, container_env, image_name
from loom.local.manifests import config_entry, expand, parse_documents
from loom.local.pods import Known, plan_pods, pod_context

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load(*names: str) -> list:
    out = []
    for name in names:
        out += parse_documents((EXAMPLES / name).read_text(), name)
    return out


def plan(objects: list, images: ImageMap | None = None, missing: tuple[str, ...] = ()) -> list:
    mset = expand(objects)
    return plan_pods(mset, Known.of(list(mset.objects)), images or ImageMap(), InjectSettings(),
                     missing)  # fmt: skip


def refusal(text: str, images: ImageMap | None = None) -> str:
    with pytest.raises(ManifestError) as err:
        plan(parse_documents(text, "bad.yaml"), images)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_deployment_makes_its_replicas_named_as_kubernetes_names_them() -> None:
    text = (EXAMPLES / "static-server.yaml").read_text().replace("replicas: 1", "replicas: 3")
    pods = expand(parse_documents(text, "s.yaml")).pods
    assert len(pods) == 3
    hashes = {p.name.split("-")[2] for p in pods}
    assert len(hashes) == 1 and len(hashes.pop()) == 10
    assert len({p.name for p in pods}) == 3
    assert all(p.name.startswith("static-server-") and len(p.name.split("-")[3]) == 5
               for p in pods)  # fmt: skip
    assert pods[0].pod["metadata"]["labels"]["pod-template-hash"] == pods[0].name.split("-")[2]


def test_the_same_template_gives_the_same_pods_and_a_changed_one_new_ones() -> None:
    text = (EXAMPLES / "static-client.yaml").read_text()
    first = [p.name for p in expand(parse_documents(text, "a")).pods]
    again = [p.name for p in expand(parse_documents(text, "a")).pods]
    changed = text.replace(
        "'true'\n", "'true'\n        'consul.hashicorp.com/service-tags': 'v2'\n", 1
    )
    rolled = [p.name for p in expand(parse_documents(changed, "a")).pods]
    assert first == again
    assert rolled != first and rolled[0].startswith("static-client-")


def test_a_statefulset_numbers_its_pods_and_a_replicaset_suffixes_them() -> None:
    base = """
apiVersion: apps/v1
kind: {kind}
metadata: {{name: db}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec: {{containers: [{{name: db, image: nginx}}]}}
"""
    sts = expand(parse_documents(base.format(kind="StatefulSet"), "x")).pods
    rs = expand(parse_documents(base.format(kind="ReplicaSet"), "x")).pods
    assert [p.name for p in sts] == ["db-0", "db-1"]
    assert all(len(p.name) == len("db-") + 5 for p in rs)


def test_json_and_a_list_of_items_are_read_as_yaml_is() -> None:
    text = '{"apiVersion": "v1", "kind": "List", "items": [' \
           '{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}},' \
           '{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "b"}}]}'  # fmt: skip
    assert [o.name for o in parse_documents(text, "l.json")] == ["a", "b"]


def test_the_seed_pods_are_injected_by_the_webhook_planner() -> None:
    runs = plan(load("static-server.yaml", "static-client.yaml"))
    server = next(r for r in runs if r.desired.name.startswith("static-server"))
    assert server.injection.inject
    names = [c["name"] for c in server.pod["spec"]["containers"]]
    assert names == ["static-server", "loom-dataplane"]
    assert (
        server.pod["metadata"]["annotations"]["consul.hashicorp.com/connect-inject-status"]
        == "injected"
    )
    assert [c.name for c in server.containers] == ["static-server"]
    assert server.containers[0].argv == (sys.executable, "-m", "loom", "http-echo",
                                         "--keep-quotes", '-text="hello world"', "-listen=:8080")  # fmt: skip
    client = next(r for r in runs if r.desired.name.startswith("static-client"))
    assert client.containers[0].argv == ("/bin/sh", "-c", "--", "while true; do sleep 30; done;")


def test_a_multi_port_pod_logs_each_service_in_with_its_secret_account() -> None:
    runs = plan(load("multi-port.yaml"))
    assert runs[0].accounts == {"web": "web", "web-admin": "web-admin"}
    assert [s.name for s in runs[0].injection.plan.services] == ["web", "web-admin"]


def test_upstreams_become_the_connect_service_variables_of_every_container() -> None:
    runs = plan(load("static-client-multi-port.yaml"))
    spec = runs[0].containers[0].spec
    env = container_env(spec, pod_context(runs[0].desired, Known.of([]), "10.0.0.9"))
    assert env["WEB_CONNECT_SERVICE_PORT"] == "1234"
    assert env["WEB_ADMIN_CONNECT_SERVICE_HOST"] == "127.0.0.1"


def test_env_resolves_config_maps_secrets_and_the_downward_api() -> None:
    objects = parse_documents("""
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {MODE: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: pw}
data: {password: aHVudGVyMg==}
---
apiVersion: v1
kind: Pod
metadata: {name: app}
spec:
  containers:
  - name: app
    image: nginx
    envFrom: [{configMapRef: {name: cfg}}]
    env:
    - {name: PW, valueFrom: {secretKeyRef: {name: pw, key: password}}}
    - {name: ME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
""", "x")  # fmt: skip
    run = plan(objects)[0]
    known = Known.of(list(expand(objects).objects))
    env = container_env(run.containers[0].spec, pod_context(run.desired, known, "10.1.2.3"))
    assert (env["MODE"], env["PW"], env["ME"], env["IP"]) == ("fast", "hunter2", "app", "10.1.2.3")
    assert container_argv(run.containers[0].spec, ImageMap().lookup("nginx")) == [
        "nginx", "-g", "daemon off;"]  # fmt: skip


def test_an_unknown_kind_is_refused_naming_it() -> None:
    message = refusal("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\n")
    assert message.startswith("CronJob/nightly (bad.yaml): kind CronJob (batch/v1) is not one")


def test_an_image_without_a_mapping_is_refused_naming_it() -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: acme/thing:2}]}\n"
    message = refusal(text)
    assert (
        "image acme/thing:2 maps to no local program (give --image-map acme/thing=COMMAND)"
        in message
    )
    mapped = ImageMap().with_entries({"acme/thing": "sleep infinity"}, "t")
    assert plan(parse_documents(text, "ok"), mapped)[0].containers[0].argv == ("sleep", "infinity")


def test_an_image_whose_program_is_missing_is_refused() -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: nginx}]}\n"
    with pytest.raises(ManifestError, match="image nginx needs nginx, which is not installed"):
        plan(parse_documents(text, "x"), missing=("nginx",))


def test_an_invalid_annotation_is_refused_by_the_injector_naming_the_object() -> None:
    text = (EXAMPLES / "static-server.yaml").read_text().replace(
        "'consul.hashicorp.com/connect-inject': 'true'",
        "'consul.hashicorp.com/connect-inject': 'true'\n        "
        "'consul.hashicorp.com/transparent-proxy': 'maybe'")  # fmt: skip
    message = refusal(text)
    assert message.startswith("Deployment/static-server (bad.yaml #3): the injector refused it")
    assert "maybe" in message


def test_a_missing_service_account_is_refused() -> None:
    text = (EXAMPLES / "static-server.yaml").read_text()
    text = text.replace(
        "kind: ServiceAccount\nmetadata:\n  name: static-server",
        "kind: ServiceAccount\nmetadata:\n  name: other",
    )
    assert "ServiceAccount static-server does not exist" in refusal(text)


def test_an_object_twice_a_missing_namespace_and_a_bad_selector_are_refused() -> None:
    sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n"
    assert "defined twice" in refusal(sa + "---\n" + sa)
    assert "namespace prod does not exist" in refusal(
        sa.replace("{name: a}", "{name: a, namespace: prod}")
    )
    text = (
        (EXAMPLES / "static-server.yaml")
        .read_text()
        .replace("      app: static-server\n  template", "      app: other\n  template")
    )
    assert "does not match the template's labels" in refusal(text)


def test_image_names_match_without_registry_tag_or_digest() -> None:
    assert image_name("docker.io/library/nginx:1.25@sha256:abc") == "nginx"
    assert image_name("hashicorp/http-echo:latest") == "hashicorp/http-echo"
    assert image_name("localhost:5000/team/app:1") == "localhost:5000/team/app"


def test_mesh_crds_become_config_entries() -> None:
    objects = load("deny-static-client.yaml") + parse_documents("""
apiVersion: consul.hashicorp.com/v1alpha1
kind: ServiceDefaults
metadata: {name: web}
spec: {protocol: http}
---
apiVersion: consul.hashicorp.com/v1alpha1
kind: ProxyDefaults
metadata: {name: global}
spec: {config: {local_connect_timeout_ms: 1000}, mode: transparent}
""", "crd")  # fmt: skip
    entries = [config_entry(o) for o in expand(objects).objects]
    # The same conversion as the Kubernetes CRD controller's: entries are marked as made from
    # their resource.
    marks = [e.pop("Meta") for e in entries]
    assert [m["consul.hashicorp.com/source-kube-resource"] for m in marks] == [
        "default/ServiceIntentions/static-server", "default/ServiceDefaults/web",
        "default/ProxyDefaults/global",
    ]  # fmt: skip
    assert {m["external-source"] for m in marks} == {"kubernetes"}
    assert entries == [
        {"Kind": "service-intentions", "Name": "static-server",
         "Sources": [{"Name": "static-client", "Action": "deny"}]},
        {"Kind": "service-defaults", "Name": "web", "Protocol": "http"},
        {"Kind": "proxy-defaults", "Name": "global",
         "Config": {"local_connect_timeout_ms": 1000}, "Mode": "transparent"},
    ]  # fmt: skip


def test_config_map_and_secret_volumes_project_their_keys_and_mounts_follow() -> None:
    objects = parse_documents("""
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: one, b: two}
---
apiVersion: v1
kind: Secret
metadata: {name: pw}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: vol}
spec:
  volumes:
  - {name: cfg, configMap: {name: cfg, items: [{key: b, path: conf/b.txt, mode: 0600}]}}
  - {name: pw, secret: {secretName: pw, defaultMode: 0400}}
  - {name: scratch, emptyDir: {}}
  containers:
  - name: c
    image: nginx
    volumeMounts:
    - {name: cfg, mountPath: /etc/app, readOnly: true}
    - {name: pw, mountPath: /run/pw, subPath: password}
""", "v")  # fmt: skip
    run = plan(objects)[0]
    assert {v: [(f.path, f.content, f.mode) for f in fs] for v, fs in run.volumes.items()} == {
        "cfg": [("conf/b.txt", "two", 0o600)],
        "pw": [("password", "hunter2", 0o400)],
        "scratch": [],
    }
    assert [(m.volume, m.source, m.target, m.read_only) for m in run.containers[0].mounts] == [
        ("cfg", "", "/etc/app", True), ("pw", "password", "/run/pw", False)]  # fmt: skip


def test_a_volume_of_a_missing_config_map_or_an_unknown_type_is_refused() -> None:
    pod = """
apiVersion: v1
kind: Pod
metadata: {name: vol}
spec:
  volumes: [VOLUME]
  containers:
  - {name: c, image: nginx, volumeMounts: [{name: v, mountPath: /etc/app}]}
"""
    missing = pod.replace("VOLUME", "{name: v, configMap: {name: nope}}")
    assert "volume v: configMap nope does not exist" in refusal(missing)
    host = pod.replace("VOLUME", "{name: v, hostPath: {path: /etc}}")
    assert "loom local mounts configMap, secret and emptyDir volumes" in refusal(host)


def test_a_headless_service_names_each_selected_pod_and_all_of_them() -> None:
    services = parse_documents("""
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
""", "s")  # fmt: skip
    pods = [("db-0", "default", {"app": "db"}, "10.0.0.2"), ("web-1", "default", {"app": "web"},
            "10.0.0.3"), ("db-x", "other", {"app": "db"}, "10.0.0.4")]  # fmt: skip
    from loom.local.pods import headless_hosts

    assert headless_hosts(services, pods) == [
        ("10.0.0.2", "db.default.svc.cluster.local"),
        ("10.0.0.2", "db-0.db.default.svc.cluster.local"),
    ]


def test_an_image_map_file_and_flags_add_to_the_built_ins_and_flags_win(tmp_path: Path) -> None:
    from loom.local.apply import image_map

    mapping = tmp_path / "images.yaml"
    mapping.write_text("acme/api: python3 -m http.server 8080\nnginx: [busybox, httpd, -f]\n")
    images = image_map(["acme/api:2=sleep 5"], [str(mapping)])
    assert images.lookup("docker.io/acme/api:2").entrypoint == ("sleep", "5")
    assert images.lookup("nginx:1.25").entrypoint == ("busybox", "httpd", "-f")
    assert images.lookup("curlimages/curl").entrypoint == ("curl",)
    with pytest.raises(ManifestError, match="--image-map 'nginx': expected IMAGE=COMMAND"):
        image_map(["nginx"], [])
    mapping.write_text("- not a mapping\n")
    with pytest.raises(ManifestError, match="expected a mapping IMAGE: COMMAND"):
        image_map([], [str(mapping)])
