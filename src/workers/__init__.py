"""Prompt collection: the ticker, the Dramatiq workers, the provider adapters, answer analysis.

- `workers.ticker`: due cron schedules become runs (`beacon ticker`).
- `service.outbox`: the run outbox, sending written runs to the broker.
- `service.messages`: the message schema (queues, actor names, message builders), a leaf.
- `workers.actors`: the Dramatiq actors (thin) and `worker_broker`; `workers.runs` and
  `workers.probes`: their logic; `workers.probe_store`: probe reads and result writes.
- `workers.runtime`: `beacon worker`, and the in-process worker and ticker of `beacon dev`.
- `service.broker`: building a broker from its URL (Redis, RabbitMQ or in-process), sending.
- `workers.providers`: one adapter per AI provider; `workers.analysis`: answer analysis.
"""
