"""The fields of a registry credential, declared once for the admin API, the config file and the store.

Which fields each kind takes, which one is its secret and which are stored
as options all follow from the tables here; the rules that check the values
are in proxy.credentials.kinds.
"""

from __future__ import annotations

from proxy.credentials.providers.gcr import GCR_MODES
from proxy.credentials.schema import Field, Group
from proxy.credentials.value_types import ADDRESS, DEFAULT_ENVIRONMENT, DURATION, ENV_NAME, SECRET_FILE, TEXT, enum_text

__all__ = ["ACCESS_KEY_ID", "ADDRESS_FIELD", "AWS_ENDPOINT_URL", "COMMON_FIELDS", "CREDENTIAL", "CREDENTIAL_EDIT", "EMAIL",
           "ENVIRONMENT",
           "JSON_KEY", "KIND", "KINDS", "KIND_FIELDS", "MODE", "OPTION_FIELDS", "PASSWORD", "RENEW_MARGIN", "ROLE_ARN",
           "SECRET_ACCESS_KEY", "SECRET_FILES", "USERNAME", "VISIBLE_FIELDS", "secret_of"]

KINDS = ("basic", "ecr", "gcr")

ADDRESS_FIELD = Field("address", ADDRESS, "Registry host[:port] as in image names, no scheme", required=True)
KIND = Field("kind", enum_text(KINDS), "Credential kind: basic is a username and password; for ecr and gcr the "
             "proxy mints registry passwords itself", default="basic")
ENVIRONMENT = Field("environment", ENV_NAME, "The environment (tenant) whose pulls use this credential",
                    default=DEFAULT_ENVIRONMENT)
EMAIL = Field("email", TEXT, "Contact e-mail")
USERNAME = Field("username", TEXT, "User name (basic)")
PASSWORD = Field("password", TEXT, "Password (basic)", secret=True)
ACCESS_KEY_ID = Field("access_key_id", TEXT, "AWS access key id (ecr); leave it and the secret key out to use the "
                      "default AWS credential chain (environment, instance role, web identity)")
SECRET_ACCESS_KEY = Field("secret_access_key", TEXT, "AWS secret access key (ecr)", secret=True)
ROLE_ARN = Field("role_arn", TEXT, "AWS role to assume (ecr)")
AWS_ENDPOINT_URL = Field("aws_endpoint_url", TEXT, "AWS API endpoint (ecr), e.g. a VPC endpoint")
RENEW_MARGIN = Field("renew_margin", DURATION, "How long before expiry a minted password is renewed (ecr, gcr); "
                     "default: the last quarter of its lifetime")
JSON_KEY = Field("json_key", TEXT, "Service-account JSON key (gcr); leave it out to use the default Google "
                 "credentials (workload identity)", secret=True)
MODE = Field("mode", enum_text(GCR_MODES), "How gcr credentials are used: access tokens minted from the key, or "
             "the key itself", default=GCR_MODES[0])

KIND_FIELDS: dict[str, tuple[Field, ...]] = {
    "basic": (USERNAME, PASSWORD),
    "ecr": (ACCESS_KEY_ID, SECRET_ACCESS_KEY, ROLE_ARN, AWS_ENDPOINT_URL, RENEW_MARGIN),
    "gcr": (JSON_KEY, MODE, RENEW_MARGIN),
}
# Fields every kind takes, before the kind's own.
COMMON_FIELDS = (ADDRESS_FIELD, ENVIRONMENT, KIND, EMAIL)
_ALL = COMMON_FIELDS + tuple(dict.fromkeys(f for fields in KIND_FIELDS.values() for f in fields))

# Kept per minted credential beside its secret, and shown back.
OPTION_FIELDS = tuple(f.name for f in _ALL if not f.secret and f not in COMMON_FIELDS and f not in KIND_FIELDS["basic"])
# What an answer may show of a credential: everything but the secrets.
VISIBLE_FIELDS = tuple(f for f in _ALL if not f.secret)

CREDENTIAL = Group("NewRegistry", "A credential for one registry address; each kind takes its own fields", _ALL)
CREDENTIAL_EDIT = CREDENTIAL.optional("The credential restated: the secret is required again whenever one was set; "
                                      "the address, environment and kind cannot change")

# The config file names a file for each secret, so none has to sit in the file itself.
SECRET_FILES = {f.name: Field(f"{f.name}_file", SECRET_FILE, f"File holding the {f.description[0].lower()}{f.description[1:]}")
                for f in _ALL if f.secret}


def secret_of(kind: str) -> str:
    """The field of ``kind`` that holds its secret."""
    return next(f.name for f in KIND_FIELDS[kind] if f.secret)
