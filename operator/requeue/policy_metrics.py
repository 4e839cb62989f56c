"""Prometheus metrics whose series are plain numbers, grouped by QueuePolicy, rendered at scrape time.

Why not ``prometheus_client``'s ``Gauge``/``Counter``/``Histogram``: they keep one child
object per label set, each with its own lock and value objects (a histogram child holds one
per bucket). One operator watching 2,000 queues has ~30,000 queue gauge series and two job
histograms per queue and job name: ~51 MiB of such objects (bench/README.md, "policy_scale").
Here a series is one dict entry holding a float (a histogram: one ``array('d')`` of its
bucket counts and sum), under its policy's ``(namespace, policy)``, so that a policy's or a
queue's series go in one step. :meth:`collect` builds the same ``Metric`` families
``prometheus_client`` would (names, types, HELP, label order, cumulative buckets with ``le``
as ``floatToGoString`` spells it, ``_count`` then ``_sum``), so ``/metrics`` reads the same.

The classes only store and render; which metrics exist, with their names, HELP texts and
labels, is defined in :mod:`requeue.metrics`. Every label set starts with ``namespace``,
``policy``; values are addressed by the full label tuple in that order. Mutations happen on
the event loop, scrapes in the HTTP server's thread: one lock per metric.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import INF, floatToGoString

__all__ = ["PolicyCounter", "PolicyGauge", "PolicyHistogram", "PolicySeries", "TwinGauge"]

V = TypeVar("V")
#: ``(namespace, policy)``: what a policy's series are grouped by.
Owner = tuple[str, str]


class PolicySeries(Collector, Generic[V]):
    """The store and the removals every kind shares; ``V`` is what one series keeps."""

    type = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        if tuple(labelnames[:2]) != ("namespace", "policy"):
            raise ValueError(f"{name}: the first labels must be namespace, policy (got {labelnames})")
        #: The name as exported (a counter's without its ``_total``, as ``prometheus_client`` keeps it).
        self.name = name.removesuffix("_total") if self.type == "counter" else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[Owner, dict[tuple[str, ...], V]] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def _check(self, labels: Sequence[str]) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected, got {labels!r}")

    def remove(self, labels: Sequence[str]) -> None:
        """Drop one series; nothing when it does not exist."""
        self._check(labels)
        with self._lock:
            owned = self._series.get((labels[0], labels[1]))
            if owned is not None:
                owned.pop(tuple(labels[2:]), None)
                if not owned:
                    del self._series[(labels[0], labels[1])]

    def remove_policy(self, namespace: str, policy: str, queue: str | None = None) -> None:
        """Drop every series of the policy, or only those of one of its queues (the third label)."""
        with self._lock:
            if queue is None:
                self._series.pop((namespace, policy), None)
                return
            owned = self._series.get((namespace, policy))
            if owned is None:
                return
            for key in [k for k in owned if k[0] == queue]:
                del owned[key]
            if not owned:
                del self._series[(namespace, policy)]

    def _items(self) -> list[tuple[tuple[str, ...], V]]:
        """Every series' full labels and value, copied under the lock (the scrape renders outside it)."""
        with self._lock:
            return [
                (owner + rest, self._copy(value))
                for owner, owned in self._series.items()
                for rest, value in owned.items()
            ]

    def _copy(self, value: V) -> V:
        return value

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.name, self.documentation, self.type)]

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, self.documentation, self.type)
        metric.samples = list(self._samples(self._items()))
        return [metric]

    def _samples(self, items: list[tuple[tuple[str, ...], V]]) -> Iterator[Sample]:
        raise NotImplementedError


class PolicyGauge(PolicySeries[float]):
    """A gauge: one float per series."""

    type = "gauge"

    def set(self, labels: Sequence[str], value: float) -> None:
        self._check(labels)
        with self._lock:
            self._series.setdefault((labels[0], labels[1]), {})[tuple(labels[2:])] = float(value)

    def _samples(self, items: list[tuple[tuple[str, ...], float]]) -> Iterator[Sample]:
        names = self.labelnames
        for labels, value in items:
            yield Sample(self.name, dict(zip(names, labels, strict=True)), value)


class TwinGauge(Collector):
    """Another name (and label names) for a :class:`PolicyGauge`'s series, e.g. a legacy name kept for
    old dashboards: rendered from the same store, so it costs no memory and cannot disagree."""

    type = "gauge"

    def __init__(
        self,
        of: PolicyGauge,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        if len(labelnames) != len(of.labelnames):
            raise ValueError(f"{name}: as many labels as {of.name} needed")
        self.of = of
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.name, self.documentation, self.type)]

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, self.documentation, self.type)
        names = self.labelnames
        metric.samples = [
            Sample(self.name, dict(zip(names, labels, strict=True)), value)
            for labels, value in self.of._items()
        ]
        return [metric]


class PolicyCounter(PolicySeries[float]):
    """A counter: one float per series, exported as ``<name>_total``."""

    type = "counter"

    def inc(self, labels: Sequence[str], amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self._check(labels)
        with self._lock:
            owned = self._series.setdefault((labels[0], labels[1]), {})
            key = tuple(labels[2:])
            owned[key] = owned.get(key, 0.0) + amount

    def _samples(self, items: list[tuple[tuple[str, ...], float]]) -> Iterator[Sample]:
        name, names = self.name + "_total", self.labelnames
        for labels, value in items:
            yield Sample(name, dict(zip(names, labels, strict=True)), value)


class PolicyHistogram(PolicySeries["array[float]"]):
    """A histogram: per series one ``array('d')`` of its bucket counts (not cumulative; +Inf last)
    and its sum, rendered cumulative with ``_count`` and ``_sum`` as ``prometheus_client`` does."""

    type = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds) or not bounds or bounds[0] < 0:
            raise ValueError(f"{name}: buckets must be distinct, sorted and not negative")
        if bounds[-1] != INF:
            bounds.append(INF)
        self.upper_bounds = tuple(bounds)
        self._le = tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def observe(self, labels: Sequence[str], amount: float) -> None:
        self._check(labels)
        index = bisect_left(self.upper_bounds, amount)  # the first bound >= amount, as prometheus_client
        with self._lock:
            owned = self._series.setdefault((labels[0], labels[1]), {})
            key = tuple(labels[2:])
            counts = owned.get(key)
            if counts is None:
                counts = owned[key] = array("d", bytes(8 * (len(self.upper_bounds) + 1)))
            if amount == amount:  # NaN: prometheus_client counts it in no bucket, only in the sum
                counts[index] += 1
            counts[-1] += amount

    def _copy(self, value: array[float]) -> array[float]:
        return array("d", value)

    def _samples(self, items: list[tuple[tuple[str, ...], array[float]]]) -> Iterator[Sample]:
        bucket, count, total = self.name + "_bucket", self.name + "_count", self.name + "_sum"
        names, le = self.labelnames, self._le
        for labels, counts in items:
            series = dict(zip(names, labels, strict=True))
            acc = 0.0
            for i, bound in enumerate(le):
                acc += counts[i]
                yield Sample(bucket, {**series, "le": bound}, acc)
            yield Sample(count, dict(series), acc)
            yield Sample(total, dict(series), counts[-1])
