"""The API token tests start Billbridge with (BILLBRIDGE_API_TOKEN) and its header."""

from __future__ import annotations

API_TOKEN = "bb_test_api_token_0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
API_TOKEN_ENV = {"BILLBRIDGE_API_TOKEN": API_TOKEN}
