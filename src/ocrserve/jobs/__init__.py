"""Asynchronous tasks: the durable task table, the runner, embedded workers and Celery."""
