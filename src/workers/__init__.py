"""Prompt collection: the ticker, the Dramatiq workers, the provider adapters, answer analysis.

- `workers.ticker`: due cron schedules become runs (`beacon ticker`).
- `workers.dispatch`: the run outbox, sending written runs to the broker.
- `workers.actors`: the Dramatiq actors (thin); `workers.runs` and `workers.probes`: their logic.
- `workers.runtime`: `beacon worker`, and the in-process worker and ticker of `beacon dev`.
- `workers.broker`: the broker from the settings (Redis, RabbitMQ or in-process).
- `workers.providers`: one adapter per AI provider; `workers.analysis`: answer analysis.
"""
