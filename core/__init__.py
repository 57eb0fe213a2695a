"""What every app shares: the task-queue seam, periodic tasks, the API's error shape and pagination.

core imports no domain app (catalog, requests_app, reports); they import it.
"""
