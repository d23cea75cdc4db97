"""The SDS messages the agent encodes and decodes by hand, read and written by the real
protobuf runtime with Envoy's generated modules (the reference the hand encoding must match)."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format
from google.rpc import status_pb2

from loom.dataplane import sdswire
from loom.dataplane.sds import pack
from loom.xds.translate.names import TYPE_SECRET
from loom.xds.translate.tls import secrets

KEY = "-----BEGIN PRIVATE KEY-----\nK\u00e9\n-----END PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\n" + "A" * 1500 + "\n-----END CERTIFICATE-----\n"


def test_the_packed_secrets_parse_as_envoys_secret_messages_equal_to_the_translators_dicts() -> None:
    packed = pack(CERT, KEY, "ROOTS")
    docs = secrets(CERT, KEY, "ROOTS")
    assert set(packed) == set(docs) == {"leaf", "roots"}
    for name, raw in packed.items():
        wrapper = any_pb2.Any.FromString(raw)
        assert wrapper.type_url == TYPE_SECRET
        message = secret_pb2.Secret()
        assert wrapper.Unpack(message)
        assert json_format.MessageToDict(message, preserving_proto_field_name=True) == docs[name]


def test_a_discovery_response_parses_with_its_version_nonce_type_and_resources_in_order() -> None:
    packed = pack(CERT, KEY, "ROOTS")
    raw = sdswire.discovery_response("7", [packed["leaf"], packed["roots"]], TYPE_SECRET, "42")
    resp = discovery_pb2.DiscoveryResponse.FromString(raw)
    assert (resp.version_info, resp.type_url, resp.nonce) == ("7", TYPE_SECRET, "42")
    assert [r.SerializeToString() for r in resp.resources] == [packed["leaf"], packed["roots"]]


def test_a_request_with_a_node_names_and_a_nack_decodes_to_the_fields_the_server_reads() -> None:
    req = discovery_pb2.DiscoveryRequest(
        version_info="3", resource_names=["leaf", "roots"], type_url=TYPE_SECRET,
        response_nonce="9", error_detail=status_pb2.Status(code=3, message="bad key"),
    )  # fmt: skip
    req.node.id = "web-sidecar-proxy"
    req.node.metadata.update({"n": 1.5, "s": "x"})  # fixed64 and nested fields to skip
    req.node.locality.zone = "z"
    got = sdswire.decode_request(req.SerializeToString())
    assert got == sdswire.DiscoveryRequest("3", ("leaf", "roots"), TYPE_SECRET, "9", "bad key")


def test_a_request_without_error_detail_is_no_nack_and_an_empty_one_is() -> None:
    plain = discovery_pb2.DiscoveryRequest(resource_names=["leaf"], response_nonce="1")
    assert sdswire.decode_request(plain.SerializeToString()).error_message is None
    empty = discovery_pb2.DiscoveryRequest(error_detail=status_pb2.Status())
    empty_bytes = empty.SerializeToString()
    assert empty_bytes  # an empty error_detail is still present on the wire
    assert sdswire.decode_request(empty_bytes).error_message == ""
    assert sdswire.decode_request(b"") == sdswire.DiscoveryRequest()


def test_a_key_the_schema_lacks_is_an_error_not_a_field_silently_dropped() -> None:
    with pytest.raises(sdswire.WireError, match="no field 'ocsp_staple'"):
        sdswire.encode({"name": "x", "tls_certificate": {"ocsp_staple": {}}}, sdswire.SECRET)
    with pytest.raises(sdswire.WireError, match="must be a string"):
        sdswire.encode({"name": 3}, sdswire.SECRET)


@pytest.mark.parametrize("raw", [b"\x0a\x05ab", b"\x80", b"\x0b", b"\x0a\x01\xff", b"\x29\x00"])
def test_malformed_requests_are_wire_errors(raw: bytes) -> None:
    with pytest.raises(sdswire.WireError):
        sdswire.decode_request(raw)


def test_the_data_source_field_numbers_match_envoys() -> None:
    fields = {f.name: f.number for f in base_pb2.DataSource.DESCRIPTOR.fields}
    assert {k: v for k, (v, _) in sdswire.DATA_SOURCE.items()} == {
        k: fields[k] for k in sdswire.DATA_SOURCE
    }
