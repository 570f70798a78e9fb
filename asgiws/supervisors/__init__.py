"""Processes around the server (docs/processes.md): `multiprocess.Supervisor` runs `--workers N`,
`reload.ReloadSupervisor` runs `--reload` (watching files with `watch`).

A supervisor imports `asgiws.server`; the server never imports a supervisor. gunicorn's worker
class is beside them, in `asgiws.workers` (the name uvicorn gives it).
"""
