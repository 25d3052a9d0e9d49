"""Produces the lines of a file to a Kafka topic with confluent-kafka (the
Python client), unkeyed: an independent real client for tests/kafka.rs.

    python produce.py BROKERS TOPIC FILE
"""
import sys

from confluent_kafka import Producer

brokers, topic, path = sys.argv[1:4]
failed = []
producer = Producer({"bootstrap.servers": brokers, "acks": "all", "linger.ms": 5})


def delivered(error, _message):
    if error is not None:
        failed.append(error)


sent = 0
with open(path, encoding="utf-8") as lines:
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        while True:
            try:
                producer.produce(topic, line.encode("utf-8"), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
        sent += 1
        producer.poll(0)
left = producer.flush(60)
if failed or left:
    sys.exit(f"{len(failed)} failed, {left} not delivered: {failed[:3]}")
print(f"produced {sent}")
