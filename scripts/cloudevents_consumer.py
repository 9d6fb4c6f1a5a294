#!/usr/bin/env python3
"""An outside consumer of NeuroStash's event topics: reads every message
with a plain Kafka client, checks that it is a structured-mode CloudEvent
and validates the envelope and its `data` against the published JSON
Schemas (the files under schemas/events/, or GET /v1/schemas/events), with
no NeuroStash code.

    python3 scripts/cloudevents_consumer.py --brokers 127.0.0.1:9092 \
        --topics neurostash.events.tenant,neurostash.events.document \
        --schemas schemas/events --expect 40

Prints one JSON summary on stdout: messages read, invalid ones with the
reason, and the event ids seen. Exits 1 when a message is invalid or fewer
than --expect arrived before --timeout.
"""

import argparse
import json
import pathlib
import sys
import time

import jsonschema
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

REQUIRED = ("specversion", "id", "source", "type")


def load_schemas(folder):
    by_uri = {}
    envelope = None
    for path in sorted(pathlib.Path(folder).glob("*.json")):
        schema = json.loads(path.read_text())
        if path.name == "cloudevent.json":
            envelope = schema
        else:
            by_uri[schema["$id"]] = schema
    if envelope is None:
        raise SystemExit(f"no cloudevent.json in {folder}")
    return envelope, by_uri


def problems_of(value, envelope, by_uri, content_type):
    found = []
    if content_type is not None and not content_type.startswith("application/cloudevents+json"):
        found.append(f"content-type header is {content_type!r}")
    for attribute in REQUIRED:
        if attribute not in value:
            found.append(f"missing required attribute {attribute}")
    if value.get("specversion") != "1.0":
        found.append(f"specversion {value.get('specversion')!r}")
    for error in jsonschema.Draft202012Validator(envelope).iter_errors(value):
        found.append(f"envelope: {error.message}")
    schema = by_uri.get(value.get("dataschema"))
    if schema is None:
        found.append(f"no schema for dataschema {value.get('dataschema')!r}")
    else:
        for error in jsonschema.Draft202012Validator(schema).iter_errors(value.get("data")):
            found.append(f"data: {error.message}")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated")
    parser.add_argument("--schemas", required=True, help="folder of schema files")
    parser.add_argument("--expect", type=int, default=0, help="read until this many messages")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    envelope, by_uri = load_schemas(args.schemas)
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"outside-consumer-{time.time_ns()}",
        "enable.auto.commit": False,
    })
    topics = [topic for topic in args.topics.split(",") if topic]
    metadata = consumer.list_topics(timeout=10)
    assignment = []
    for topic in topics:
        if topic not in metadata.topics:
            raise SystemExit(f"topic {topic} does not exist")
        for partition in metadata.topics[topic].partitions:
            assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
    consumer.assign(assignment)

    messages, invalid, event_ids, types = 0, [], [], {}
    deadline = time.monotonic() + args.timeout
    while messages < args.expect and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            raise SystemExit(f"consume failed: {message.error()}")
        messages += 1
        headers = dict(message.headers() or [])
        content_type = headers.get("content-type")
        content_type = content_type.decode() if content_type is not None else None
        try:
            value = json.loads(message.value())
        except ValueError as error:
            invalid.append({"offset": message.offset(), "problems": [f"not json: {error}"]})
            continue
        found = problems_of(value, envelope, by_uri, content_type)
        if message.key() is None or message.key().decode() != value.get("subject"):
            found.append("message key is not the subject (stream id)")
        if found:
            invalid.append({"id": value.get("id"), "problems": found})
        event_ids.append(value.get("id"))
        types[value.get("type")] = types.get(value.get("type"), 0) + 1
    consumer.close()
    print(json.dumps({"messages": messages, "invalid": invalid, "event_ids": event_ids, "types": types}))
    return 0 if not invalid and messages >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
