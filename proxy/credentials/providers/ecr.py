"""AWS ECR: registry passwords from ``ecr:GetAuthorizationToken``, valid for 12 hours."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from proxy.credentials.providers import Minted, MintError

__all__ = ["EcrAddress", "EcrMinter", "parse_ecr_address"]

_ADDRESS = re.compile(
    r"(?P<account>[0-9]{12})\.dkr\.ecr(?P<fips>-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+)"
    r"\.amazonaws\.com(?P<china>\.cn)?")


@dataclass(frozen=True)
class EcrAddress:
    account: str
    region: str
    fips: bool


def parse_ecr_address(address: str) -> EcrAddress:
    match = _ADDRESS.fullmatch(address)
    if match is None:
        raise ValueError(f"{address!r} is not an ECR registry address; expected "
                         "<12-digit account>.dkr.ecr.<region>.amazonaws.com (or .amazonaws.com.cn, dkr.ecr-fips)")
    return EcrAddress(match["account"], match["region"], bool(match["fips"]))


@dataclass(frozen=True)
class EcrMinter:
    address: EcrAddress
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    role_arn: str | None = None
    endpoint_url: str | None = None

    def mint(self) -> Minted:
        # Imported here: config parsing and the CLI need only the address rules.
        import botocore.exceptions

        try:
            data = self._client().get_authorization_token(registryIds=[self.address.account])["authorizationData"][0]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise MintError(f"ECR GetAuthorizationToken failed: {_safe(exc)}") from None
        except (KeyError, IndexError):
            raise MintError("ECR GetAuthorizationToken returned no authorization data") from None
        try:
            user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        except (KeyError, ValueError):
            raise MintError("ECR returned an authorization token that is not base64 user:password") from None
        if not password:
            raise MintError("ECR returned an authorization token without a password")
        expires = data.get("expiresAt")
        return Minted(user, password, expires.timestamp() if expires is not None else None)

    def _client(self) -> Any:
        import boto3
        import botocore.config

        session = boto3.session.Session(aws_access_key_id=self.access_key_id,
                                        aws_secret_access_key=self.secret_access_key,
                                        region_name=self.address.region)
        config = botocore.config.Config(connect_timeout=10, read_timeout=20, retries={"max_attempts": 2},
                                        use_fips_endpoint=self.address.fips)
        if self.role_arn:
            sts = session.client("sts", config=config)
            assumed = sts.assume_role(RoleArn=self.role_arn, RoleSessionName="registry-proxy")["Credentials"]
            session = boto3.session.Session(aws_access_key_id=assumed["AccessKeyId"],
                                            aws_secret_access_key=assumed["SecretAccessKey"],
                                            aws_session_token=assumed["SessionToken"],
                                            region_name=self.address.region)
        return session.client("ecr", endpoint_url=self.endpoint_url, config=config)


def _safe(exc: Exception) -> str:
    # botocore messages name operations and error codes, never the secret key.
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
    return str(exc)
