"""Where Stripe test-mode events go: BILLBRIDGE_TEST_MODE_EVENTS and the test workspace."""

from __future__ import annotations

import pytest

from billbridge.config import Settings, load_settings
from billbridge.errors import ConfigurationError

LIVE = {"CUSTOMERIO_SITE_ID": "site", "CUSTOMERIO_TRACK_API_KEY": "key"}
TEST = {"CUSTOMERIO_TEST_SITE_ID": "tsite", "CUSTOMERIO_TEST_TRACK_API_KEY": "tkey"}


@pytest.mark.parametrize(
    ("policy", "workspaces", "route"),
    [
        (None, {}, "dry_run"),
        (None, LIVE, "dry_run"),
        (None, {**LIVE, **TEST}, "test"),
        ("deliver", LIVE, "live"),
        ("deliver", {**LIVE, **TEST}, "test"),
        ("dry_run", {**LIVE, **TEST}, "dry_run"),
        ("ignore", {**LIVE, **TEST}, "ignore"),
    ],
)
def test_route(policy: str | None, workspaces: dict[str, str], route: str) -> None:
    """Unset: the test workspace, else dry_run (never the live one); `deliver` falls back to
    the live workspace; `dry_run` and `ignore` win over a test workspace."""
    values = dict(workspaces)
    if policy is not None:
        values["BILLBRIDGE_TEST_MODE_EVENTS"] = policy
    assert Settings(_env_file=None, **values).test_mode_route == route


def test_test_workspace_urls_default_to_the_live_ones() -> None:
    """The test workspace uses the live region and URL overrides unless given its own."""
    same = Settings(_env_file=None, CUSTOMERIO_TRACK_URL="http://127.0.0.1:9")
    assert same.test_track_base_url == "http://127.0.0.1:9"
    eu = Settings(_env_file=None, CUSTOMERIO_TEST_REGION="eu")
    assert eu.test_track_base_url == "https://track-eu.customer.io"
    assert eu.test_app_base_url == "https://api-eu.customer.io"
    assert eu.track_base_url == "https://track.customer.io"


def test_test_site_id_and_key_go_together() -> None:
    """A test Site ID without its Track API key is a configuration error naming both."""
    with pytest.raises(ConfigurationError, match="CUSTOMERIO_TEST_SITE_ID and CUSTOMERIO_TEST"):
        load_settings(_env_file=None, CUSTOMERIO_TEST_SITE_ID="tsite")
