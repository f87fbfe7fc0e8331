"""The journey tests drive a tenant's pipeline on a frozen clock: the campaigns' `desk`."""

from tests.campaigns.conftest import desk  # noqa: F401 - fixture used here
from tests.messaging.conftest import smtp_sink, tls_files  # noqa: F401 - fixtures used here
