"""Use cases of the catalog. Views, admin, API and tasks call these; none sets a state by hand."""
