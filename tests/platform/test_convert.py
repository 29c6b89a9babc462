"""Conversions to messages: timestamps exactly as protobuf's own `FromDatetime` makes them, and
GetWorkspace's messages of cached views (`convert.WorkspaceMessages`): built once per view
object, never for another one, for `max_age` at most, icon URLs valid for their full TTL."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from beacon.v1 import workspace_service_pb2 as ws_pb
from service.config import Settings
from service.domain.tenancy.workspace_views import WorkspaceView
from service.servicers.convert import WorkspaceMessages, timestamp, workspace_to_proto

SETTINGS = Settings(signing_secret="s" * 40, icon_url_ttl_seconds=600)
VIEW = WorkspaceView(
    id="ws_one",
    organization_id="org_one",
    organization_name="Org",
    organization_slug="org",
    name="One",
    slug="one",
    domain="one.example",
    icon_file_id="file_one",
    brand_aliases=["Uno"],
    competitors=[],
    enabled_providers=["openai"],
    cron="",
    time_zone="UTC",
    create_time=datetime(2026, 1, 1, tzinfo=UTC),
    update_time=datetime(2026, 1, 2, tzinfo=UTC),
    version=3,
)


OFFSETS = st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes)))
ZONES: st.SearchStrategy[Any] = st.none() | st.just(UTC) | OFFSETS


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES))
def test_timestamps_are_those_protobuf_makes(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)
    assert timestamp(value) == expected


def without_icon_url(message: ws_pb.Workspace) -> ws_pb.Workspace:
    copy = ws_pb.Workspace()
    copy.CopyFrom(message)
    copy.ClearField("icon_url")
    return copy


def test_a_view_is_converted_once_and_another_view_never_gets_its_message() -> None:
    messages = WorkspaceMessages(SETTINGS, max_age=60)
    first = messages.get(VIEW)
    assert messages.get(VIEW) is first
    assert without_icon_url(first) == without_icon_url(workspace_to_proto(VIEW, SETTINGS))
    renamed = dataclasses.replace(VIEW, name="Renamed", version=4)
    assert (messages.get(renamed).name, messages.get(renamed).etag) == ("Renamed", "4")
    # An equal but distinct object (a fresh read) is converted again too.
    assert messages.get(dataclasses.replace(VIEW)) is not first


def test_a_message_is_kept_for_max_age_at_most() -> None:
    messages = WorkspaceMessages(SETTINGS, max_age=0.05)
    first = messages.get(VIEW)
    time.sleep(0.1)
    assert messages.get(VIEW) is not first


def test_the_icon_url_stays_valid_for_its_ttl_until_the_message_is_dropped() -> None:
    max_age = 30.0
    built = time.time()
    url = WorkspaceMessages(SETTINGS, max_age=max_age).get(VIEW).icon_url
    expires = int(parse_qs(urlparse(url).query)["expires"][0])
    assert expires >= built + max_age + SETTINGS.icon_url_ttl_seconds


def test_a_full_memo_stays_bounded() -> None:
    messages = WorkspaceMessages(SETTINGS, max_age=60, max_entries=3)
    views = [dataclasses.replace(VIEW, id=f"ws_{n}") for n in range(5)]
    for view in views:
        messages.get(view)
    assert len(messages._built._items) <= 3
