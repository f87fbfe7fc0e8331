"""The segment tests that drive a tenant's pipeline on a frozen clock use the campaigns'
`desk`."""

from tests.campaigns.conftest import desk  # noqa: F401 - fixture used here
