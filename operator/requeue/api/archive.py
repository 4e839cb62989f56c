"""Where a clean keeps the jobs it removes: ``actions.clean.<state>.archive`` of a QueuePolicy."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from requeue.api.base import ApiModel, Duration, SecretKeyRef

#: A Postgres table name requeue creates and writes: ``table`` or ``schema.table``, each part a
#: lower-case identifier that needs no quoting (letters, digits, ``_``; not starting with a digit;
#: at most 63 characters, Postgres's limit), so the name in the spec is the name in the database.
ArchiveTable = Annotated[
    str,
    Field(
        min_length=1,
        max_length=127,
        pattern=r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$",
    ),
]

#: The default table.
DEFAULT_ARCHIVE_TABLE = "requeue_archived_jobs"


class ArchiveSpec(ApiModel):
    """Write every job to a Postgres table before the clean removes it (each job once, even when
    the clean is interrupted; a job whose write failed is never removed)."""

    dsn_secret_ref: SecretKeyRef = Field(
        description="Secret key holding a libpq connection string or postgresql:// URL of the archive.",
    )
    table: ArchiveTable = Field(
        default=DEFAULT_ARCHIVE_TABLE,
        description=(
            "Table the jobs go to, `table` or `schema.table` (lower-case letters, digits and _); "
            "created when missing. Its key is (prefix, queue, job_id, job_timestamp)."
        ),
    )
    batch_size: int = Field(
        default=200,
        ge=1,
        le=1000,
        description="Jobs archived and then removed per round (one Postgres transaction each).",
    )
    timeout: Duration = Field(
        default="10s", description="Bound on connecting to Postgres and on each write (statement_timeout)."
    )
