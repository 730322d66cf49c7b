"""Reading a /metrics answer: its samples by name and labels."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

MESSAGES_ROUTE = "/sessions/<uuid:session_id>/messages"


@dataclass(frozen=True)
class Scrape:
    """The samples of one exposition, and its text."""

    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return cls(text, samples)

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when the series does not exist (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def requests(scrape: Scrape, route: str, method: str, status: int) -> float:
    return scrape.value(
        "chat_service_http_requests_total", route=route, method=method, status=str(status)
    )


def grown(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """How much a sample grew from ``before`` to ``after``."""
    return after.value(name, **labels) - before.value(name, **labels)


def requests_grown(before: Scrape, after: Scrape, route: str, method: str, status: int) -> float:
    return requests(after, route, method, status) - requests(before, route, method, status)
