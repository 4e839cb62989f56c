"""Whole custom resources (apiVersion, kind, metadata, spec, status) and their CRD facts.

The kind, plural, short names and printer columns live here beside the models,
so ``requeue crds`` has a single source for everything in ``crds/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from requeue.api.base import ApiModel
from requeue.api.policy import QueuePolicySpec, QueuePolicyStatus
from requeue.api.replay import DLQReplaySpec, DLQReplayStatus

GROUP = "requeue.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "requeue"


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry of a CRD."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class KindInfo:
    """Names and columns of one kind, as the CRD declares them."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[ApiModel]
    status: type[BaseModel]
    description: str
    columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)


class Resource(BaseModel):
    """Fields common to every requeue object; metadata is kept as Kubernetes sent it."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Literal["requeue.dev/v1alpha1"] = Field(alias="apiVersion")
    metadata: dict[str, Any] = Field(default_factory=dict)


class DLQReplay(Resource):
    """A DLQReplay manifest as applied with kubectl or read by ``requeue replay -f``."""

    INFO: ClassVar[KindInfo]
    kind: Literal["DLQReplay"]
    spec: DLQReplaySpec
    status: DLQReplayStatus | None = None


class QueuePolicy(Resource):
    """A QueuePolicy manifest."""

    INFO: ClassVar[KindInfo]
    kind: Literal["QueuePolicy"]
    spec: QueuePolicySpec
    status: QueuePolicyStatus | None = None


_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")

DLQReplay.INFO = KindInfo(
    kind="DLQReplay",
    plural="dlqreplays",
    singular="dlqreplay",
    short_names=("dlqr",),
    spec=DLQReplaySpec,
    status=DLQReplayStatus,
    description=(
        "DLQReplay replays a selection of failed BullMQ jobs, at a bounded rate, once its "
        "health gates pass, and verifies the outcome. Each matching job is replayed once."
    ),
    columns=(
        PrinterColumn("Queue", ".spec.queue", description="Queue being replayed."),
        PrinterColumn("Phase", ".status.phase", description="Current phase."),
        PrinterColumn("Progress", ".status.progress", description="Done of matched."),
        _AGE,
        PrinterColumn("Message", ".status.message", priority=1),
    ),
)

QueuePolicy.INFO = KindInfo(
    kind="QueuePolicy",
    plural="queuepolicies",
    singular="queuepolicy",
    short_names=("qpol",),
    spec=QueuePolicySpec,
    status=QueuePolicyStatus,
    description=(
        "QueuePolicy watches BullMQ queues: alerts on thresholds, pauses queues while a "
        "dependency is down, replays what failed after it recovers, and cleans old jobs."
    ),
    columns=(
        PrinterColumn("Queues", ".spec.queues", description="Watched queues."),
        PrinterColumn(
            "Healthy",
            '.status.conditions[?(@.type=="Healthy")].status',
            description="All thresholds and gates fine.",
        ),
        PrinterColumn(
            "Escalation",
            ".status.escalation.name",
            description="The escalation level in force (spec.escalation); empty when none.",
        ),
        _AGE,
    ),
)

KINDS: tuple[type[DLQReplay] | type[QueuePolicy], ...] = (DLQReplay, QueuePolicy)
