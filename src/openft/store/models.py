"""Fine-tuned models: the names that succeeded jobs produced."""

from __future__ import annotations

from sqlalchemy import Connection, select

from openft.store.schema import jobs


def fine_tuned_models(conn: Connection, project_id: str) -> list[tuple[str, int]]:
    """(model name, created_at) of the project's fine-tuned models, oldest first."""
    rows = conn.execute(
        select(jobs.c.fine_tuned_model, jobs.c.finished_at)
        .where(jobs.c.project_id == project_id, jobs.c.fine_tuned_model.is_not(None))
        .order_by(jobs.c.pk)
    ).all()
    return [(row.fine_tuned_model, row.finished_at or 0) for row in rows]
