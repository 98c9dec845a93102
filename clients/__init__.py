"""Clients for the services around tripscore: produce trip events, ask for risk scores."""

from clients.events import DeliveryError, Rejected, TripEventProducer
from clients.scores import BlockingRiskScoreClient, InvalidRequest, RiskScoreClient, ScoreTimeout, collect

__all__ = [
    "BlockingRiskScoreClient",
    "DeliveryError",
    "InvalidRequest",
    "Rejected",
    "RiskScoreClient",
    "ScoreTimeout",
    "TripEventProducer",
    "collect",
]
