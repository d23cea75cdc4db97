"""Files the CLI reads: HCL (python-hcl2) in the API's JSON shape, and service definitions
refused on an unknown key with config write's message and a did-you-mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.cli.documents import read_document, service_definitions
from loom.cli.errors import InputError

WEB_HCL = """\
# a Consul service definition, as the Consul docs write it
service {
  name = "web"
  port = 8080
  tags = ["v1", "blue"]
  meta = { version = "1" }
  check { ttl = "10s" }
  connect {
    sidecar_service {
      proxy {
        upstreams = [{ destination_name = "db", local_bind_port = 9191 }]
      }
    }
  }
}
"""


def test_an_hcl_service_definition_reads_as_the_json_the_api_takes(tmp_path: Path) -> None:
    path = tmp_path / "web.hcl"
    path.write_text(WEB_HCL)
    assert service_definitions(read_document(str(path)), str(path)) == [
        {
            "name": "web",
            "port": 8080,
            "tags": ["v1", "blue"],
            "meta": {"version": "1"},
            "check": {"ttl": "10s"},
            "connect": {
                "sidecar_service": {
                    "proxy": {"upstreams": [{"destination_name": "db", "local_bind_port": 9191}]}
                }
            },
        }
    ]


def test_repeated_blocks_under_a_list_key_are_the_items_even_when_there_is_one(
    tmp_path: Path,
) -> None:
    one = tmp_path / "one.hcl"
    one.write_text('services { name = "a" }\n')
    two = tmp_path / "two.hcl"
    two.write_text('services { name = "a" }\nservices { name = "b" }\n')
    assert service_definitions(read_document(str(one)), "one") == [{"name": "a"}]
    assert service_definitions(read_document(str(two)), "two") == [{"name": "a"}, {"name": "b"}]


def test_a_config_entry_in_hcl_without_the_suffix_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "entry"
    path.write_text('Kind = "service-intentions"\nName = "db"\n'
                    'Sources = [{ Name = "web", Action = "deny" }]\n')  # fmt: skip
    assert read_document(str(path)) == {
        "Kind": "service-intentions", "Name": "db",
        "Sources": [{"Name": "web", "Action": "deny"}],
    }  # fmt: skip


def test_json_and_yaml_still_read_as_before(tmp_path: Path) -> None:
    j = tmp_path / "a.json"
    j.write_text('{"service": {"name": "a"}}')
    y = tmp_path / "a.yaml"
    y.write_text("Kind: service-defaults\nName: web\n")
    assert read_document(str(j)) == {"service": {"name": "a"}}
    assert read_document(str(y)) == {"Kind": "service-defaults", "Name": "web"}


def test_a_file_that_is_none_of_the_three_names_each_parser_s_complaint(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_text("a: [\n")
    with pytest.raises(InputError) as err:
        read_document(str(path))
    assert str(err.value).startswith(f"{path}: neither JSON, YAML nor HCL (YAML: ")
    broken = tmp_path / "broken.hcl"
    broken.write_text('service { name = "a"\n')
    with pytest.raises(InputError, match=r"broken.hcl: not valid HCL: .*line"):
        read_document(str(broken))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"service": {"name": "typo", "prot": 86}},
         "service.prot: unknown field (did you mean 'Port'?)"),
        ({"name": "web", "tagz": []}, "tagz: unknown field (did you mean 'Tags'?)"),
        ({"service": {"name": "web", "connect": {"sidecar_service": {"porxy": {}}}}},
         "service.connect.sidecar_service.porxy: unknown field (did you mean 'Proxy'?)"),
        ({"services": [{"name": "a"}, {"name": "b", "checks": [{"tll": "1s"}]}]},
         "services[1].checks[0].tll: unknown field (did you mean 'TTL'?)"),
        ({"service": {"name": "a"}, "extra": 1}, "extra: unknown field"),
        ({"name": "a", "tagged_addresses": {"lan": {"address": "1.2.3.4", "prt": 1}}},
         "tagged_addresses.lan.prt: unknown field (did you mean 'Port'?)"),
    ],
)  # fmt: skip
def test_an_unknown_key_in_a_service_definition_is_refused_naming_it(
    doc: object, message: str
) -> None:
    with pytest.raises(InputError) as err:
        service_definitions(doc, "f.json")
    assert str(err.value).startswith(f"f.json: {message}")


def test_every_key_the_registration_reads_is_accepted_in_either_spelling() -> None:
    doc = {"Service": {
        "ID": "web-1", "Name": "web", "Tags": [], "Address": "10.0.0.1", "Port": 80,
        "Meta": {"any": "key"}, "EnableTagOverride": False, "Weights": {"Passing": 1},
        "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}},
        "Checks": [{"CheckID": "c", "TTL": "10s", "Notes": ""}],
        "Connect": {"SidecarService": {"Port": 21000, "Proxy": {
            "Mode": "transparent", "Config": {"protocol": "http", "anything": 1},
            "TransparentProxy": {"OutboundListenerPort": 15001},
            "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}],
            "Expose": {"Checks": True, "Paths": [{"ListenerPort": 1, "LocalPathPort": 2}]},
        }}},
    }}  # fmt: skip
    assert service_definitions(doc, "f")[0]["Name"] == "web"
