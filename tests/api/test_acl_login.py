"""Auth methods, binding rules, login and logout on a real `loom server` with ACLs on.

The user's side through py-consul (its ``acl.auth_method``, ``acl.binding_rule``, ``acl.login``
and ``acl.logout`` calls) and plain HTTP: a ``jwt`` method with a static public key, a rule
binding ``${value.name}`` as a service, a login whose token may write that service and no
other, logout. Next to it the attacker: a JWT signed by another key, an expired one, one for
another audience, one no rule selects, a logout of a token no login made, an unknown method.
Each is refused with a 403 and no token is written (counted with the management token).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from loom.acl.jwt import JwtSigner
from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
AUDIENCE = "loom"
METHOD = "vms"


def _signer() -> JwtSigner:
    return JwtSigner(ec.generate_private_key(ec.SECP256R1()))


def _claims(name: str, *, aud: str = AUDIENCE, age: float = 0.0, ttl: float = 600.0) -> Any:
    now = dt.datetime.now(dt.UTC).timestamp() - age
    return {"sub": name, "aud": [aud], "iat": int(now), "exp": int(now + ttl), "svc": name}


class Site:
    """A server with one jwt method and one binding rule, and a management client."""

    def __init__(self, server: ServerProcess, *, create: bool = True) -> None:
        self.server = server
        self.signer = _signer()
        host, port = server.http.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.admin = self.client(ROOT)
        if not create:  # a restarted server that already holds them
            return
        self.method = self.admin.acl.auth_method.create(
            METHOD,
            "jwt",
            config={
                "JWTValidationPubKeys": [self.signer.public_pem()],
                "BoundAudiences": [AUDIENCE],
                "ClaimMappings": {"svc": "name"},
            },
            max_token_ttl="1h",
        )
        self.rule = self.admin.acl.binding_rule.create(
            METHOD, "service", "${value.name}", selector='value.name != "db"'
        )

    def client(self, token: str | None = None) -> consul.Consul:
        return consul.Consul(host=self.host, port=self.port, token=token)

    def call(self, method: str, path: str, body: Any = None, token: str = "") -> Any:
        headers = {"X-Consul-Token": token} if token else {}
        return self.server.request(method, path, body, headers)

    def login_tokens(self) -> list[Any]:
        return [t for t in self.admin.acl.token.list() if t.get("AuthMethod")]


@pytest.fixture
def site() -> Iterator[Site]:
    with acl_server(ROOT) as server:
        yield Site(server)


def test_py_consul_logs_in_with_a_jwt_and_gets_a_token_for_its_own_service_only(
    site: Site,
) -> None:
    jwt = site.signer.sign(_claims("web"))
    token = site.client().acl.login(METHOD, jwt, meta={"pod": "default/web-1"})
    assert token["AuthMethod"] == METHOD and token["Local"] is True
    assert token["ServiceIdentities"] == [{"ServiceName": "web"}]
    assert token["Description"] == 'token created via login: {"pod":"default/web-1"}'
    assert "ExpirationTime" in token
    web = {"Name": "web", "Port": 8080}
    status, _, _ = site.call("PUT", "/v1/agent/service/register", web, token["SecretID"])
    assert status == 200
    status, body, _ = site.call(
        "PUT", "/v1/agent/service/register", {"Name": "db", "Port": 5432}, token["SecretID"]
    )
    assert status == 403 and "lacks permission 'service:write' on \"db\"" in body
    assert site.client().acl.logout(token["SecretID"]) is True
    status, body, _ = site.call("GET", "/v1/acl/token/self", token=token["SecretID"])
    assert (status, body) == (403, "ACL not found\n")
    assert site.login_tokens() == []


def test_auth_methods_and_binding_rules_read_back_in_consuls_shapes(site: Site) -> None:
    method = site.admin.acl.auth_method.read(METHOD)
    assert (method["Name"], method["Type"], method["MaxTokenTTL"]) == (METHOD, "jwt", "1h0m0s")
    assert method["Config"]["ClaimMappings"] == {"svc": "name"}
    [stub] = site.admin.acl.auth_method.list()
    assert stub["Name"] == METHOD and "Config" not in stub
    rule = site.admin.acl.binding_rule.read(site.rule["ID"])
    assert (rule["AuthMethod"], rule["BindType"], rule["BindName"]) == (
        METHOD,
        "service",
        "${value.name}",
    )
    assert [r["ID"] for r in site.admin.acl.binding_rule.list(auth_method=METHOD)] == [rule["ID"]]
    assert site.admin.acl.binding_rule.list(auth_method="other") == []
    status, body, _ = site.call("GET", "/v1/acl/auth-method/nope", token=ROOT)
    assert (status, body) == (404, "Requested auth method does not exist\n")
    status, body, _ = site.call("GET", f"/v1/acl/binding-rule/{uuid.uuid4()}", token=ROOT)
    assert (status, body) == (404, "Requested binding rule does not exist\n")


def test_writing_a_method_or_rule_that_does_not_fit_is_a_400_naming_the_field(site: Site) -> None:
    bad_key = {"Name": "x", "Type": "jwt", "Config": {"JWTValidationPubKeys": ["nope"]}}
    status, body, _ = site.call("PUT", "/v1/acl/auth-method", bad_key, ROOT)
    assert status == 400 and "JWTValidationPubKeys" in body
    k8s = {"Name": "k", "Type": "kubernetes", "Config": {"Host": "https://10.0.0.1"}}
    status, body, _ = site.call("PUT", "/v1/acl/auth-method", k8s, ROOT)
    assert status == 400 and "ServiceAccountJWT" in body
    retype = {"Name": METHOD, "Type": "kubernetes", "Config": {}}
    status, body, _ = site.call("PUT", f"/v1/acl/auth-method/{METHOD}", retype, ROOT)
    assert status == 400
    unknown_var = {"AuthMethod": METHOD, "BindType": "service", "BindName": "${value.other}"}
    status, body, _ = site.call("PUT", "/v1/acl/binding-rule", unknown_var, ROOT)
    assert status == 400 and "unknown variable" in body
    no_method = {"AuthMethod": "ghost", "BindType": "service", "BindName": "web"}
    status, body, _ = site.call("PUT", "/v1/acl/binding-rule", no_method, ROOT)
    assert status == 400 and "ghost" in body
    assert len(site.admin.acl.binding_rule.list()) == 1


def test_deleting_a_method_deletes_its_rules_and_the_tokens_logins_made(site: Site) -> None:
    site.client().acl.login(METHOD, site.signer.sign(_claims("web")))
    assert len(site.login_tokens()) == 1
    assert site.admin.acl.auth_method.delete(METHOD) is True
    assert site.login_tokens() == [] and site.admin.acl.binding_rule.list() == []
    status, body, _ = site.call("DELETE", f"/v1/acl/auth-method/{METHOD}", token=ROOT)
    assert (status, body) == (404, "Cannot find auth method to delete\n")


def test_the_auth_method_api_needs_acl_read_and_write(site: Site) -> None:
    token = site.client().acl.login(METHOD, site.signer.sign(_claims("web")))["SecretID"]
    status, body, _ = site.call("GET", "/v1/acl/auth-methods", token=token)
    assert status == 403 and "lacks permission 'acl:read'" in body
    body_ = {"AuthMethod": METHOD, "BindType": "service", "BindName": "db"}
    status, body, _ = site.call("PUT", "/v1/acl/binding-rule", body_, token)
    assert status == 403 and "lacks permission 'acl:write'" in body
    assert len(site.admin.acl.binding_rule.list()) == 1


# -- the attacker --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "why"),
    [
        ("forged", "no known key successfully validated the token signature"),
        ("expired", "expired"),
        ("audience", "aud"),
        ("not selected", "Permission denied\n"),
        ("alg none", "alg none"),
    ],
)
def test_a_login_with_a_jwt_the_method_does_not_vouch_for_is_denied_and_writes_nothing(
    site: Site, what: str, why: str
) -> None:
    if what == "forged":
        jwt = _signer().sign(_claims("web"))  # the attacker's own key
    elif what == "expired":
        jwt = site.signer.sign(_claims("web", age=3600, ttl=600))
    elif what == "audience":
        jwt = site.signer.sign(_claims("web", aud="another-system"))
    elif what == "not selected":
        jwt = site.signer.sign(_claims("db"))  # the rule's selector refuses db
    else:
        head, body, _ = site.signer.sign(_claims("web"), {"alg": "none"}).split(".")
        jwt = f"{head}.{body}."
    status, answer, _ = site.call(
        "POST", "/v1/acl/login", {"AuthMethod": METHOD, "BearerToken": jwt}
    )
    assert status == 403, answer
    assert answer.startswith("Permission denied") and why.lower() in answer.lower(), answer
    assert site.login_tokens() == []


def test_a_login_through_an_unknown_method_is_acl_not_found_as_consul_answers(site: Site) -> None:
    jwt = site.signer.sign(_claims("web"))
    status, answer, _ = site.call(
        "POST", "/v1/acl/login", {"AuthMethod": "nope", "BearerToken": jwt}
    )
    assert (status, answer) == (403, 'ACL not found: auth method "nope" not found\n')
    assert site.login_tokens() == []


def test_a_logout_of_a_token_no_login_made_is_refused_and_the_token_stays(site: Site) -> None:
    made = site.admin.acl.token.create(description="ordinary")
    status, answer, _ = site.call("POST", "/v1/acl/logout", token=made["SecretID"])
    assert (status, answer) == (403, "Permission denied\n")
    assert site.admin.acl.token.read(made["AccessorID"])["Description"] == "ordinary"
    status, answer, _ = site.call("POST", "/v1/acl/logout", token=ROOT)
    assert status == 403
    status, answer, _ = site.call("POST", "/v1/acl/logout", token=str(uuid.uuid4()))
    assert (status, answer) == (403, "ACL not found\n")
    status, answer, _ = site.call("POST", "/v1/acl/logout")
    assert (status, answer) == (401, "Supplied token does not exist\n")


def test_a_logout_deletes_the_token_that_asks_and_no_other_login_token(site: Site) -> None:
    first = site.client().acl.login(METHOD, site.signer.sign(_claims("web")))
    second = site.client().acl.login(METHOD, site.signer.sign(_claims("api")))
    assert site.client().acl.logout(second["SecretID"]) is True
    remaining = [t["AccessorID"] for t in site.login_tokens()]
    assert remaining == [first["AccessorID"]]


def _jwks(*signers: JwtSigner) -> str:
    keys = []
    for signer in signers:
        key = signer.key.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        numbers = key.public_numbers()
        keys.append(
            {
                "kty": "EC",
                "crv": "P-256",
                "use": "sig",
                "x": base64.urlsafe_b64encode(numbers.x.to_bytes(32)).rstrip(b"=").decode(),
                "y": base64.urlsafe_b64encode(numbers.y.to_bytes(32)).rstrip(b"=").decode(),
            }
        )
    return json.dumps({"keys": keys})


def test_a_jwt_method_reads_its_jwks_file_at_every_login_so_a_rotated_key_counts(
    site: Site, tmp_path: Path
) -> None:
    old, new = _signer(), _signer()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(_jwks(old))
    method = {
        "Name": "files",
        "Type": "jwt",
        "Config": {
            "JWKSFile": str(jwks),
            "BoundAudiences": [AUDIENCE],
            "ClaimMappings": {"svc": "name"},
        },
    }
    assert site.call("PUT", "/v1/acl/auth-method", method, ROOT)[0] == 200
    rule = {"AuthMethod": "files", "BindType": "service", "BindName": "${value.name}"}
    assert site.call("PUT", "/v1/acl/binding-rule", rule, ROOT)[0] == 200
    login = {"AuthMethod": "files", "BearerToken": old.sign(_claims("web"))}
    assert site.call("POST", "/v1/acl/login", login)[0] == 200
    jwks.write_text(_jwks(new))
    status, answer, _ = site.call("POST", "/v1/acl/login", login)
    assert status == 403 and "no known key" in answer
    login["BearerToken"] = new.sign(_claims("web"))
    assert site.call("POST", "/v1/acl/login", login)[0] == 200
    assert len(site.login_tokens()) == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        ([], 400),
        ({"AuthMethod": METHOD, "BearerToken": "x", "Meta": {"pod": {"nested": 1}}}, 400),
        ({"AuthMethod": METHOD, "BearerToken": "x", "Extra": 1}, 400),
        ({"AuthMethod": METHOD, "BearerToken": "a." * 20_000}, 403),
        ({"AuthMethod": METHOD, "BearerToken": ""}, 403),
        ({"AuthMethod": METHOD, "BearerToken": "e30.e30.e30"}, 403),  # {} . {} . garbage
    ],
)
def test_a_hostile_login_body_is_refused_in_one_line_and_writes_nothing(
    site: Site, body: Any, status: int
) -> None:
    got, answer, _ = site.call("POST", "/v1/acl/login", body)
    assert got == status, answer
    assert isinstance(answer, str) and answer.count("\n") == 1, answer
    assert site.login_tokens() == []


def test_auth_methods_rules_and_login_tokens_survive_a_restart_of_a_server_with_a_data_dir(
    tmp_path: Path,
) -> None:
    with acl_server(ROOT, data_dir=tmp_path) as first:
        site = Site(first)
        token = site.client().acl.login(METHOD, site.signer.sign(_claims("web")))
    with acl_server(ROOT, data_dir=tmp_path) as second:
        again = Site(second, create=False)
        admin = again.admin
        assert admin.acl.auth_method.read(METHOD)["Config"]["ClaimMappings"] == {"svc": "name"}
        assert [r["BindName"] for r in admin.acl.binding_rule.list()] == ["${value.name}"]
        me = again.client(token["SecretID"]).acl.token.read_self()
        assert me["AuthMethod"] == METHOD and me["ServiceIdentities"] == [{"ServiceName": "web"}]
        assert again.client().acl.logout(token["SecretID"]) is True
