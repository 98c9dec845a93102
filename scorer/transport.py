"""Faust's aiokafka transport with the project's producer durability: Faust enables idempotence only inside
transactions, and the scorer sends outside them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver

from runtime.kafka_clients import DURABILITY


class DurableProducer(driver.Producer):
    """Faust's producer, acknowledged by all in-sync replicas and idempotent (`DURABILITY`)."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), **DURABILITY}


class DurableTransport(driver.Transport):
    """The aiokafka transport whose producers are `DurableProducer`s."""

    Producer = DurableProducer


class DurableApp(faust.App):
    """A `faust.App` on `DurableTransport`."""

    def _new_transport(self) -> DurableTransport:
        return DurableTransport(self.conf.broker_consumer, self)
