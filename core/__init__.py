"""The shared vocabulary every app uses and that imports no app: ids, problems (RFC 9457
errors) and their JSON renderer, keyset pagination, and the admin's paging of large
tables."""
