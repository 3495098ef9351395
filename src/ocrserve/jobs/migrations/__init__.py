"""Alembic migrations of the task table, run by :func:`ocrserve.jobs.schema.migrate`.

The revisions are history: a released one is never edited, a change of the table is a new
revision written by hand (explicit ``op`` calls, no autogenerate), and ``TaskRow`` follows it.
"""

#: The table's name as the revisions write it: they record history, so they do not follow the
#: live model's constant (a test checks that the model and the head revision agree).
TABLE = "ocr_tasks"
