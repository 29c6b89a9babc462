"""Conversions between rows and protobuf messages shared by several servicers."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from beacon.v1 import workspace_service_pb2 as ws_pb

PROVIDER_TO_PROTO = {
    "openai": ws_pb.PROVIDER_OPENAI,
    "anthropic": ws_pb.PROVIDER_ANTHROPIC,
    "google": ws_pb.PROVIDER_GOOGLE,
    "perplexity": ws_pb.PROVIDER_PERPLEXITY,
    "mistral": ws_pb.PROVIDER_MISTRAL,
    "cohere": ws_pb.PROVIDER_COHERE,
}
PROVIDER_FROM_PROTO = {v: k for k, v in PROVIDER_TO_PROTO.items()}


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp, or None for an unset time."""
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts
