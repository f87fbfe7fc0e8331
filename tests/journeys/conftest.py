"""The journey tests drive a tenant's pipeline on a frozen clock (the campaigns' `desk`), or
send for real through the SMTP sink and the loopback HTTP receiver (messaging's `post`)."""

from tests.campaigns.conftest import desk  # noqa: F401 - fixture used here
from tests.messaging.conftest import (  # noqa: F401 - fixtures used here
    _receiver_server,
    http_receiver,
    post,
    smtp_sink,
    tls_files,
)
