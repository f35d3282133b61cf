"""``ctr events``: print events as they happen, one line each, like upstream."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from pycontainerd.ctr.common import run
from pycontainerd.ctr.units import go_time_string

if TYPE_CHECKING:
    from pycontainerd.client.client import Client
    from pycontainerd.core.events import Envelope


def event_json(env: Envelope) -> str:
    """The payload as compact JSON with the proto field names (Go's ``json.Marshal``)."""
    from google.protobuf import any_pb2, json_format

    from pycontainerd.api import typeurl

    try:
        msg = typeurl.unpack(any_pb2.Any(type_url=env.event.type_url, value=env.event.value))
        doc = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    except Exception:
        return ""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


@click.command("events")
@click.argument("filters", nargs=-1)
@click.pass_context
def events(ctx: click.Context, filters: tuple[str, ...]) -> None:
    """Display containerd events: [flags] [<filter>, ...]."""

    async def work(client: Client) -> None:
        async for env in client.event_service().subscribe(*filters):
            line = f"{go_time_string(env.timestamp)} {env.namespace} {env.topic} {event_json(env)}"
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    run(ctx, work)
